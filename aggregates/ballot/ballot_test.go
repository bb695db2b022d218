package ballot_test

import (
	"errors"
	"testing"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/aggregatetest"
	"github.com/chronicle-es/chronicle/aggregates/ballot"
)

var (
	created = ballot.BallotCreated{ElectionID: "e-1", VoterID: "v-1"}
	rated   = ballot.BallotCandidateRated{CompetitionID: "landscapes", CandidateID: "photo-7", Rating: 4}
)

func fixture(t *testing.T) *aggregatetest.Fixture[ballot.State] {
	return aggregatetest.New(t, ballot.Definition())
}

func TestCreateBallot(t *testing.T) {
	fixture(t).When(ballot.CreateBallot{ElectionID: "e-1", VoterID: "v-1"}).Then(created)
	fixture(t).Given(created).When(ballot.CreateBallot{ElectionID: "e-1", VoterID: "v-1"}).ThenRejected(ballot.CodeAlreadyExists)
	fixture(t).When(ballot.CreateBallot{ElectionID: "e-1"}).ThenRejected(ballot.CodeInvalidInput)
	fixture(t).When(ballot.CreateBallot{VoterID: "v-1"}).ThenRejected(ballot.CodeInvalidInput)
}

func TestRateCandidate(t *testing.T) {
	fixture(t).Given(created).When(ballot.RateCandidate{CompetitionID: "landscapes", CandidateID: "photo-7", Rating: 4}).Then(rated)
	// Rating again replaces the earlier rating.
	fixture(t).Given(created, rated).When(ballot.RateCandidate{CompetitionID: "landscapes", CandidateID: "photo-7", Rating: 2}).
		Then(ballot.BallotCandidateRated{CompetitionID: "landscapes", CandidateID: "photo-7", Rating: 2}).
		ThenState(func(t testing.TB, s ballot.State) {
			if len(s.Ratings) != 1 || s.Ratings[0].Rating != 2 {
				t.Fatalf("state %+v", s)
			}
		})
	for _, tc := range []struct {
		name  string
		given []any
		cmd   ballot.RateCandidate
		code  string
	}{
		{"on a ballot that does not exist", nil, ballot.RateCandidate{CompetitionID: "c", CandidateID: "x", Rating: 3}, ballot.CodeNotFound},
		{"with rating 0", []any{created}, ballot.RateCandidate{CompetitionID: "c", CandidateID: "x", Rating: 0}, ballot.CodeInvalidRating},
		{"with rating 6", []any{created}, ballot.RateCandidate{CompetitionID: "c", CandidateID: "x", Rating: 6}, ballot.CodeInvalidRating},
		{"without a candidate", []any{created}, ballot.RateCandidate{CompetitionID: "c", Rating: 3}, ballot.CodeInvalidInput},
		{"without a competition", []any{created}, ballot.RateCandidate{CandidateID: "x", Rating: 3}, ballot.CodeInvalidInput},
		{"after the ballot was cast", []any{created, rated, ballot.BallotCast{}}, ballot.RateCandidate{CompetitionID: "c", CandidateID: "x", Rating: 3}, ballot.CodeAlreadyCast},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fixture(t).Given(tc.given...).When(tc.cmd).ThenRejected(tc.code)
		})
	}
}

func TestCastBallot(t *testing.T) {
	fixture(t).Given(created, rated).When(ballot.CastBallot{}).Then(ballot.BallotCast{}).
		ThenState(func(t testing.TB, s ballot.State) {
			if !s.Cast {
				t.Fatal("not cast")
			}
		})
	fixture(t).Given(created).When(ballot.CastBallot{}).ThenRejected(ballot.CodeEmpty)
	fixture(t).Given(created, rated, ballot.BallotCast{}).When(ballot.CastBallot{}).ThenRejected(ballot.CodeAlreadyCast)
	fixture(t).When(ballot.CastBallot{}).ThenRejected(ballot.CodeNotFound)
}

func TestBallotIgnoresDuplicateCommands(t *testing.T) {
	f := fixture(t).Given(created)
	cmd := f.Command(ballot.RateCandidate{CompetitionID: "c", CandidateID: "x", Rating: 5})
	f.WhenCommand(cmd).Then(ballot.BallotCandidateRated{CompetitionID: "c", CandidateID: "x", Rating: 5})
	cmd.Data = []byte(`{"competition_id":"c","candidate_id":"x","rating":1}`) // same id, other payload
	f.WhenCommand(cmd).ThenError(aggregates.ErrDuplicateCommand).
		ThenState(func(t testing.TB, s ballot.State) {
			if len(s.Ratings) != 1 || s.Ratings[0].Rating != 5 {
				t.Fatalf("duplicate changed the ratings: %+v", s.Ratings)
			}
		})
}

func TestBallotInvariantCatchesInconsistentHistories(t *testing.T) {
	def := ballot.Definition()
	for _, tc := range []struct {
		name   string
		events []any
	}{
		{"a rating out of range", []any{created, ballot.BallotCandidateRated{CompetitionID: "c", CandidateID: "x", Rating: 9}}},
		{"a rating without a candidate", []any{created, ballot.BallotCandidateRated{CompetitionID: "c", Rating: 3}}},
		{"a cast without ratings", []any{created, ballot.BallotCast{}}},
		{"a rating before the ballot exists", []any{rated}},
		{"a ballot without a voter", []any{ballot.BallotCreated{ElectionID: "e-1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := def.New(aggregatetest.AggregateID)
			var err error
			for i, p := range tc.events {
				name, _ := def.EventType(p)
				err = r.Apply(&aggregates.Event{Type: name, Subject: aggregatetest.AggregateID, Version: int64(i), Data: p})
				if i < len(tc.events)-1 && err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
			}
			if !errors.Is(err, aggregates.ErrInvariantViolated) {
				t.Fatalf("last event: %v, want ErrInvariantViolated", err)
			}
		})
	}
}

func TestBallotRejectsConcurrentWriters(t *testing.T) {
	f := fixture(t).Given(created)
	cmd := f.Command(ballot.RateCandidate{CompetitionID: "c", CandidateID: "x", Rating: 5})
	v := int64(3)
	cmd.ExpectedVersion = &v
	f.WhenCommand(cmd).ThenError(aggregates.ErrConcurrencyConflict)
}
