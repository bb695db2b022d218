package ballot_test

import (
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

func TestBallotRejectsConcurrentWriters(t *testing.T) {
	f := fixture(t).Given(created)
	cmd := f.Command(ballot.RateCandidate{CompetitionID: "c", CandidateID: "x", Rating: 5})
	v := int64(3)
	cmd.ExpectedVersion = &v
	f.WhenCommand(cmd).ThenError(aggregates.ErrConcurrencyConflict)
}
