// Package ballot is the Ballot aggregate of the second seed article: a voter's
// ballot in an election rates candidates of competitions from 1 to 5 and is
// then cast. It shows the core is not Order-shaped.
package ballot

import (
	"errors"
	"fmt"

	"github.com/chronicle-es/chronicle/aggregates"
)

// Rejection codes of the ballot's commands.
const (
	CodeAlreadyExists = "already_exists"
	CodeNotFound      = "not_found"
	CodeInvalidInput  = "invalid_input"
	CodeInvalidRating = "invalid_rating"
	CodeAlreadyCast   = "already_cast"
	CodeEmpty         = "empty_ballot"
)

// Commands.
type (
	// CreateBallot opens a voter's ballot in an election.
	CreateBallot struct {
		ElectionID string `json:"election_id"`
		VoterID    string `json:"voter_id"`
	}
	// RateCandidate rates a candidate of a competition from 1 to 5. Rating
	// the same candidate of the same competition again replaces the earlier
	// rating (the voter changed their mind; the history keeps both), so a
	// ballot holds at most one rating per candidate and competition.
	RateCandidate struct {
		CompetitionID string `json:"competition_id"`
		CandidateID   string `json:"candidate_id"`
		Rating        int    `json:"rating"`
	}
	// CastBallot casts the ballot; it then accepts no more ratings.
	CastBallot struct{}
)

// Events.
type (
	// BallotCreated opens a ballot.
	BallotCreated struct {
		ElectionID string `json:"election_id"`
		VoterID    string `json:"voter_id"`
	}
	// BallotCandidateRated records a rating.
	BallotCandidateRated struct {
		CompetitionID string `json:"competition_id"`
		CandidateID   string `json:"candidate_id"`
		Rating        int    `json:"rating"`
	}
	// BallotCast records the ballot cast.
	BallotCast struct{}
)

// Rating is one candidate's rating on a ballot.
type Rating struct {
	CompetitionID string `json:"competition_id"`
	CandidateID   string `json:"candidate_id"`
	Rating        int    `json:"rating"`
}

// State is a ballot as its events made it.
type State struct {
	ElectionID string   `json:"election_id"`
	VoterID    string   `json:"voter_id"`
	Ratings    []Rating `json:"ratings,omitempty"`
	Cast       bool     `json:"cast"`
}

// Exists reports whether the ballot was created.
func (s *State) Exists() bool { return s.ElectionID != "" }

// Clone copies the state deeply.
func (s *State) Clone() State {
	c := *s
	c.Ratings = append([]Rating(nil), s.Ratings...)
	return c
}

func (s *State) rating(competition, candidate string) int {
	for i, r := range s.Ratings {
		if r.CompetitionID == competition && r.CandidateID == candidate {
			return i
		}
	}
	return -1
}

// Definition returns the ballot aggregate type, named "ballot".
func Definition() *aggregates.Definition[State] {
	return aggregates.MustDefine("ballot",
		aggregates.When("BallotCreated", func(s *State, e BallotCreated) {
			s.ElectionID, s.VoterID = e.ElectionID, e.VoterID
		}),
		aggregates.When("BallotCandidateRated", func(s *State, e BallotCandidateRated) {
			if i := s.rating(e.CompetitionID, e.CandidateID); i >= 0 {
				s.Ratings[i].Rating = e.Rating
				return
			}
			s.Ratings = append(s.Ratings, Rating(e))
		}),
		aggregates.When("BallotCast", func(s *State, _ BallotCast) { s.Cast = true }),
		aggregates.Handle("CreateBallot", func(s State, c CreateBallot) ([]any, error) {
			if s.Exists() {
				return nil, aggregates.Reject(CodeAlreadyExists, "the ballot already exists")
			}
			if c.ElectionID == "" || c.VoterID == "" {
				return nil, aggregates.Reject(CodeInvalidInput, "election_id and voter_id are required")
			}
			return []any{BallotCreated(c)}, nil
		}),
		aggregates.Handle("RateCandidate", func(s State, c RateCandidate) ([]any, error) {
			if err := open(&s); err != nil {
				return nil, err
			}
			if c.CompetitionID == "" || c.CandidateID == "" {
				return nil, aggregates.Reject(CodeInvalidInput, "competition_id and candidate_id are required")
			}
			if c.Rating < 1 || c.Rating > 5 {
				return nil, aggregates.Reject(CodeInvalidRating, "rating must be 1 to 5, got %d", c.Rating)
			}
			return []any{BallotCandidateRated(c)}, nil
		}),
		aggregates.Handle("CastBallot", func(s State, _ CastBallot) ([]any, error) {
			if err := open(&s); err != nil {
				return nil, err
			}
			if len(s.Ratings) == 0 {
				return nil, aggregates.Reject(CodeEmpty, "an empty ballot cannot be cast: rate at least one candidate")
			}
			return []any{BallotCast{}}, nil
		}),
		aggregates.Invariant(valid),
	)
}

// valid is the ballot's invariant, checked after every event. Apply replaces
// a candidate's earlier rating, so ratings are unique without checking.
func valid(s *State) error {
	if !s.Exists() {
		if s.VoterID != "" || len(s.Ratings) != 0 || s.Cast {
			return errors.New("a ballot that was never created has a voter, ratings or was cast")
		}
		return nil
	}
	if s.VoterID == "" {
		return errors.New("the ballot has no voter")
	}
	for _, r := range s.Ratings {
		if r.Rating < 1 || r.Rating > 5 {
			return fmt.Errorf("candidate %s of %s rated %d", r.CandidateID, r.CompetitionID, r.Rating)
		}
		if r.CompetitionID == "" || r.CandidateID == "" {
			return errors.New("a rating lacks its competition or candidate")
		}
	}
	if s.Cast && len(s.Ratings) == 0 {
		return errors.New("a cast ballot has no ratings")
	}
	return nil
}

func open(s *State) error {
	if !s.Exists() {
		return aggregates.Reject(CodeNotFound, "the ballot does not exist: send CreateBallot first")
	}
	if s.Cast {
		return aggregates.Reject(CodeAlreadyCast, "the ballot was cast and accepts no more changes")
	}
	return nil
}
