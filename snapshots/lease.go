package snapshots

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Lease is one owner's hold on one partition of a store: an Epoch the owner
// chose when it claimed the partition, and Seq, the number of writes the
// store acknowledged under that epoch.
//
// The store keeps the partition's current lease next to its checkpoint and
// snapshots and changes it atomically with them:
//
//   - Claim replaces the lease by (epoch, 0) and returns the checkpoint as it
//     was at that instant.
//   - SaveLeased writes only while the stored lease has the caller's Epoch
//     and a Seq at least the caller's, and adds one to Seq with the write.
//   - LoadLeased reads the lease together with the snapshots, at one instant,
//     and refuses (ErrLeaseLost) unless it has the caller's Epoch and a Seq at
//     least the caller's.
//
// So an owner that keeps Seq at the value of its last acknowledged write
// learns, with every load, whether the store still holds everything it
// wrote: a flush or a restart without data removes the lease; a restart from
// an older copy or a failover to a lagging replica brings back a lower Seq
// or an older epoch; another owner's claim brings another epoch. And a
// former owner, or a write delayed in the network, can no longer change
// anything once the partition was claimed again.
type Lease struct {
	Epoch string // chosen by the owner at Claim; unique per claim (a ULID)
	Seq   int64  // writes acknowledged under Epoch
}

func (l Lease) String() string { return l.Epoch + ":" + strconv.FormatInt(l.Seq, 10) }

// encode is the stored form of a lease: "<epoch>:<seq>".
func (l Lease) encode() string { return l.String() }

// decodeLease parses a stored lease; ok is false for anything else.
func decodeLease(s string) (Lease, bool) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return Lease{}, false
	}
	seq, err := strconv.ParseInt(s[i+1:], 10, 64)
	if err != nil || seq < 0 {
		return Lease{}, false
	}
	return Lease{Epoch: s[:i], Seq: seq}, true
}

// checkEpoch validates an epoch given to Claim, LoadLeased or SaveLeased.
func checkEpoch(epoch string) error {
	if epoch == "" {
		return fmt.Errorf("%w: the lease epoch is empty", ErrInvalid)
	}
	return nil
}

// ErrLeaseLost is returned by LoadLeased and SaveLeased when the partition's
// stored lease is not the caller's: the store lost data, went back in time,
// or another owner claimed the partition. Nothing was written, and nothing
// read may be trusted. The error is a *LeaseError.
var ErrLeaseLost = errors.New("the partition's snapshot-store lease is not ours")

// LeaseError says how the stored lease differs from the caller's.
type LeaseError struct {
	Partition string // "order/3"
	Want      Lease  // the caller's lease
	Found     *Lease // the stored one; nil when there is none
}

// Reason names the likely cause in words.
func (e *LeaseError) Reason() string {
	switch {
	case e.Found == nil:
		return "the lease is gone: the store was flushed or restarted without its data"
	case e.Found.Epoch != e.Want.Epoch:
		return fmt.Sprintf("the partition was claimed again (epoch %s): another owner took it over, or the store went back to a copy from before our claim", e.Found.Epoch)
	default:
		return fmt.Sprintf("the store went back in time: it acknowledged %d writes under our lease but now holds %d (restarted from an older copy, or failed over to a lagging replica)", e.Want.Seq, e.Found.Seq)
	}
}

func (e *LeaseError) Error() string {
	return fmt.Sprintf("snapshot store lease of %s lost: %s; restore the partition from Kafka and claim it again", e.Partition, e.Reason())
}

// Is reports whether target is ErrLeaseLost.
func (e *LeaseError) Is(target error) bool { return target == ErrLeaseLost }

// checkLease compares the stored lease (nil: none) with the caller's.
func checkLease(where string, want Lease, found *Lease) error {
	if found != nil && found.Epoch == want.Epoch && found.Seq >= want.Seq {
		return nil
	}
	return &LeaseError{Partition: where, Want: want, Found: found}
}
