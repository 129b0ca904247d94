"""Two LangGraph nodes whose code needs conflicting numpy, each in its own environment.

The product's reason to exist: node "legacy" is code written against numpy 1.x (it uses
``np.float_``, which numpy 2 removed) and node "modern" is code that needs numpy 2 (``np.isdtype``,
new in 2.0). One Python environment cannot hold both. Here the graph is a real LangGraph graph
running in this process; each node's *code* runs through the SDK in its own fabric environment
(``numpy<2`` and ``numpy>=2``), and the graph's state carries the values from one to the other.

    make run                                  # in another terminal: the fabric on 127.0.0.1:8080
    pip install ./clients/python langgraph
    python clients/python/examples/langgraph_conflicting_numpy.py

ENVFABRIC_URL and ENVFABRIC_TOKEN say where the fabric is (default: make run's address, no token).
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, TypedDict

from langgraph.graph import END, START, StateGraph

import envfabric

WORKFLOW = "langgraph-numpy"


class State(TypedDict, total=False):
    values: List[float]
    legacy_numpy: str
    legacy_total: float
    modern_numpy: str
    modern_scaled: List[float]


# Each node's code reads the graph's state from `state` and prints its update as JSON on its last
# line; the fabric runs it with the node's own environment's Python.
LEGACY_CODE = """
import numpy as np
assert np.__version__.startswith("1."), np.__version__
values = np.array(state["values"], dtype=np.float_)   # np.float_ is gone in numpy 2
update = {"legacy_numpy": np.__version__, "legacy_total": float(values.sum())}
"""

MODERN_CODE = """
import numpy as np
assert int(np.__version__.split(".")[0]) >= 2, np.__version__
values = np.asarray(state["values"])
assert np.isdtype(values.dtype, "real floating")        # np.isdtype is new in numpy 2.0
scaled = values / state["legacy_total"]
update = {"modern_numpy": np.__version__, "modern_scaled": [round(float(v), 6) for v in scaled]}
"""


class FabricNode:
    """A LangGraph node whose work runs in the fabric environment of node_id."""

    def __init__(self, fabric: envfabric.Client, node_id: str, code: str) -> None:
        self.fabric, self.node_id, self.code = fabric, node_id, code

    def __call__(self, state: State) -> Dict[str, Any]:
        program = f"import json\nstate = json.loads({json.dumps(json.dumps(dict(state)))})\n{self.code}\nprint(json.dumps(update))\n"
        result = self.fabric.run(WORKFLOW, self.node_id, program, timeout=120)
        if not result.ok:
            raise RuntimeError(f"node {self.node_id} failed (exit {result.exit_code}):\n{result.stderr}")
        update: Dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return update


def ensure_env(fabric: envfabric.Client, node_id: str, requirement: str) -> str:
    """Create the node's environment, or bring an existing one to the requirement; returns the
    numpy version it locked."""
    try:
        fabric.create(WORKFLOW, node_id, packages=[requirement])
    except envfabric.EnvAlreadyExists:
        fabric.update(WORKFLOW, node_id, [requirement])
    return fabric.deps(WORKFLOW, node_id).locked_versions["numpy"]


def build_graph(fabric: envfabric.Client) -> Any:
    graph = StateGraph(State)
    graph.add_node("legacy", FabricNode(fabric, "legacy", LEGACY_CODE))
    graph.add_node("modern", FabricNode(fabric, "modern", MODERN_CODE))
    graph.add_edge(START, "legacy")
    graph.add_edge("legacy", "modern")
    graph.add_edge("modern", END)
    return graph.compile()


def main() -> int:
    with envfabric.Client() as fabric:
        legacy = ensure_env(fabric, "legacy", "numpy<2")
        modern = ensure_env(fabric, "modern", "numpy>=2")
        print(f"environments: legacy numpy {legacy}, modern numpy {modern}")
        final: State = build_graph(fabric).invoke({"values": [1.0, 2.0, 3.0, 4.0]})
    print(json.dumps(final, indent=2, sort_keys=True))
    assert final["legacy_numpy"] == legacy and final["modern_numpy"] == modern
    assert final["legacy_total"] == 10.0 and final["modern_scaled"] == [0.1, 0.2, 0.3, 0.4]
    print("ok: one graph, two nodes, numpy", legacy, "and numpy", modern)
    return 0


if __name__ == "__main__":
    sys.exit(main())
