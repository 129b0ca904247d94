package envs

import (
	"context"
	"errors"
)

// ErrNotStarted marks an agent failure from before the agent had the call (its connection was
// refused): nothing was started, so the call may go to another agent. The agent client wraps it.
var ErrNotStarted = errors.New("the agent refused the connection: nothing was started")

// runAgain tries a run once more on another live agent with the environment's interpreter when
// its agent refused the connection: the agent was just killed, gossip has not noticed yet, and
// nothing ran. Any other failure (the code may have started), or no other agent, answers as it
// was. The retry holds the same shared lease; the audit names the agent that ran the code.
func (s *Service) runAgain(ctx context.Context, r *running, need Need, err error, run func(Agent) (RunResult, error)) (RunResult, error) {
	if !errors.Is(err, ErrNotStarted) {
		return RunResult{}, err
	}
	need.Avoid = r.agent.Name()
	other, perr := s.agents.Pick(ctx, need)
	if perr != nil {
		return RunResult{}, err
	}
	s.log.Warn("a run's agent refused the connection; running it on another", "failed_agent", r.agent.Name(), "agent", other.Name(), "err", err)
	r.agent = other
	return run(other)
}
