package snapshots

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// DefaultKeyPrefix starts every key a Redis store writes.
const DefaultKeyPrefix = "chronicle:"

// dropBatch is how many keys one SCAN step asks for and one UNLINK removes
// in DropPartition.
const dropBatch = 1000

// compareFunctions are the Lua helpers of the write scripts: keep(key, new)
// is true when the stored value at key must be kept because it has the same
// format byte and a greater ordering field than new (see saveScript).
const compareFunctions = `
local function order(v)
  local _, a, b, c, d, e, f, g, h = string.byte(v, 1, 9)
  return ((a * 256 + b) * 256 + c) * 256 + d, ((e * 256 + f) * 256 + g) * 256 + h
end
local function keep(key, new)
  local cur = redis.pcall('GETRANGE', key, 0, 8)
  if type(cur) ~= 'string' or #cur < 9 or string.byte(cur, 1) ~= string.byte(new, 1) then
    return false
  end
  local ch, cl = order(cur)
  local nh, nl = order(new)
  return ch > nh or (ch == nh and cl > nl)
end
`

// saveScript is the Save write: compare-and-set of every snapshot and the
// checkpoint in one script, which Redis runs atomically.
//
// KEYS[1] is the checkpoint key and KEYS[2..] the snapshot keys; ARGV[i] is
// the encoded value for KEYS[i], ARGV[1] being "" when there is no
// checkpoint; the last ARGV is "1" when the checkpoint may only continue an
// existing one (Checkpoint.Continues). A stored value is kept when it has the same format byte and a
// greater ordering field (bytes 2..9, which compare like the signed number,
// see redis_codec.go); anything else (missing, newer-or-equal input, a value
// that is not ours, a key of another type) is overwritten. The field is
// compared as two 32-bit halves, each exact in a Lua number (a double), and
// not as a Lua string, whose comparison follows the server's locale.
//
// Every read happens before the first write. Redis refuses a script for lack
// of memory only at its first write, never after it, so the script either
// writes nothing or everything it decided to write.
const saveScript = compareFunctions + `
local write = {}
for i = 2, #KEYS do
  write[i] = not keep(KEYS[i], ARGV[i])
end
local cp = 0
local gone = 0
if ARGV[1] ~= '' then
  if ARGV[#KEYS + 1] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then
    gone = 1
  elseif not keep(KEYS[1], ARGV[1]) then
    cp = 1
  end
end
local written = 0
for i = 2, #KEYS do
  if write[i] then
    redis.call('SET', KEYS[i], ARGV[i])
    written = written + 1
  end
end
if cp == 1 then redis.call('SET', KEYS[1], ARGV[1]) end
return {written, cp, gone}
`

// claimScript is Claim: KEYS[1] is the lease key, KEYS[2] the checkpoint
// key, ARGV[1] the new lease. It returns {1, checkpoint}, {0, ”} when there
// is no checkpoint, or {2, ”} when the checkpoint key holds another type.
// The read comes before the write, so an out-of-memory refusal leaves
// everything as it was.
const claimScript = `
local cp = redis.pcall('GET', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1])
if type(cp) == 'table' then return {2, ''} end
if not cp then return {0, ''} end
return {1, cp}
`

// loadScript is LoadLeased's read: KEYS[1] is the lease key and KEYS[2..]
// the snapshot keys. It returns {lease or nil, {values or nil...}}. It never
// writes, so Redis runs it also when out of memory.
const loadScript = `
local l = redis.pcall('GET', KEYS[1])
if type(l) ~= 'string' then l = false end
local v = {}
if #KEYS > 1 then v = redis.pcall('MGET', unpack(KEYS, 2)) end
return {l, v}
`

// loadBatch is how many snapshots one loadScript call reads: Lua's unpack
// is bounded by its stack (about 8000 values).
const loadBatch = 1000

// leasedSaveScript is SaveLeased: saveScript's compare-and-set, made only
// while the lease is the caller's, and adding one to the lease's sequence.
//
// KEYS[1] is the lease key, KEYS[2] the checkpoint key and KEYS[3..] the
// snapshot keys. ARGV[1] is the caller's epoch, ARGV[2] its sequence, ARGV[3]
// the encoded checkpoint or "", and ARGV[i+1] the value for KEYS[i], i >= 3.
// It returns {newSeq} after writing, {-1} when there is no lease, {-2, seq,
// epoch} when the epoch differs and {-3, seq, epoch} when the stored
// sequence is below the caller's. Every read happens before the first write.
const leasedSaveScript = compareFunctions + `
local l = redis.pcall('GET', KEYS[1])
if type(l) ~= 'string' then return {-1} end
local ep, seq = string.match(l, '^(.*):(%d+)$')
if not ep then return {-1} end
seq = tonumber(seq)
if ep ~= ARGV[1] then return {-2, seq, ep} end
if seq < tonumber(ARGV[2]) then return {-3, seq, ep} end
local write = {}
for i = 3, #KEYS do
  write[i] = not keep(KEYS[i], ARGV[i + 1])
end
local cp = ARGV[3] ~= '' and not keep(KEYS[2], ARGV[3])
for i = 3, #KEYS do
  if write[i] then redis.call('SET', KEYS[i], ARGV[i + 1]) end
end
if cp then redis.call('SET', KEYS[2], ARGV[3]) end
redis.call('SET', KEYS[1], ep .. ':' .. string.format('%d', seq + 1))
return {seq + 1}
`

// Redis is a snapshot store in Redis: a single node, a Sentinel-managed
// master or a Cluster. See the package documentation for the rules it keeps
// and the Redis settings it needs.
//
// # Keys
//
// Every key of one partition of one aggregate type shares a Cluster hash tag,
// so all of them live in one slot and one Save is a single-slot operation:
//
//	chronicle:{order.3}:cp        the checkpoint of order, partition 3
//	chronicle:{order.3}:s:<id>    the snapshot of aggregate <id>
//
// Values use a compact binary format (see redis_codec.go): a 17-byte header,
// the stamp, the aggregate's bytes as they are, and a CRC-32C.
//
// # Atomic writes
//
// Save runs one Lua script (EVALSHA, falling back to EVAL after a Redis
// restart empties the script cache) rather than WATCH + MULTI/EXEC. Both are
// atomic and, thanks to the shared hash tag, both work on Cluster. The script
// was chosen because it needs one round trip where WATCH needs three (WATCH,
// read the stored versions, MULTI/EXEC), because it never retries: when two
// processors write the same partition during a rebalance hand-over, WATCH
// would abort and loop, while the script just compares and sets on the
// server, and because it needs no connection pinned for the transaction. The
// price is that Redis runs nothing else while the script runs: about 3.5 ms
// per 1000 snapshots of 300 bytes on a 2-core machine (BenchmarkRedis reports
// it as redis-ns/op), so keep Saves to a few thousand snapshots. Scripts
// replicate as their effects inside MULTI/EXEC, so replicas see each Save
// whole too.
//
// The versions compared are those in the stored values themselves, not in
// a separate index: an index would save Redis time, but a lost or stale
// index would let a zombie writer replace a newer snapshot with an older one
// under a checkpoint that relies on the newer one.
//
// # Timeouts
//
// Every method honours its context. Clients built by Open have
// ContextTimeoutEnabled set, so a hung server is given up on at the
// context's deadline; a client passed to NewRedis keeps its own settings.
// After an outage go-redis may fail calls at once with the last dial error
// until its background probe, run once a second, reaches Redis again: retry
// for a few seconds before treating Redis as gone.
type Redis struct {
	client     redis.UniversalClient
	prefix     string
	ownsClient bool
	save       *redis.Script
	claim      *redis.Script
	saveLeased *redis.Script
	load       *redis.Script
	closed     atomic.Bool
}

// RedisOption configures a Redis store.
type RedisOption func(*Redis) error

// WithKeyPrefix replaces DefaultKeyPrefix, for example to keep several
// environments in one Redis. The prefix may not contain '{' or '}': they
// would move the Cluster hash tag.
func WithKeyPrefix(prefix string) RedisOption {
	return func(r *Redis) error {
		if strings.ContainsAny(prefix, "{}") {
			return fmt.Errorf("%w: key prefix %q contains '{' or '}', which would change the Cluster hash tag; choose a prefix without braces", ErrInvalid, prefix)
		}
		r.prefix = prefix
		return nil
	}
}

// NewRedis returns a store using client, which the caller keeps owning:
// Close does not close it.
func NewRedis(client redis.UniversalClient, opts ...RedisOption) (*Redis, error) {
	if client == nil {
		return nil, fmt.Errorf("snapshots: creating a Redis store: %w: the client is nil; pass a redis.UniversalClient or use Open with a URL", ErrInvalid)
	}
	r := &Redis{
		client:     client,
		prefix:     DefaultKeyPrefix,
		save:       redis.NewScript(saveScript),
		claim:      redis.NewScript(claimScript),
		saveLeased: redis.NewScript(leasedSaveScript),
		load:       redis.NewScript(loadScript),
	}
	var errs []error
	for _, o := range opts {
		if err := o(r); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("snapshots: creating a Redis store: %w", err)
	}
	return r, nil
}

// Open returns a store connected to the Redis named by url (see ParseURL for
// the forms it accepts). The store owns the client: Close closes it. Open
// does not contact Redis; the first call does.
func Open(url string, opts ...RedisOption) (*Redis, error) {
	uo, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	r, err := NewRedis(redis.NewUniversalClient(uo), opts...)
	if err != nil {
		return nil, err
	}
	r.ownsClient = true
	return r, nil
}

// Checkpoint returns the partition's checkpoint; ok is false when there is
// none.
func (r *Redis) Checkpoint(ctx context.Context, aggType string, partition int32) (cp Checkpoint, ok bool, err error) {
	if err := r.enter(ctx, aggType, partition); err != nil {
		return Checkpoint{}, false, fmt.Errorf("snapshots: reading the checkpoint of %s: %w", where(aggType, partition), err)
	}
	key := r.checkpointKey(aggType, partition)
	b, err := r.client.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return Checkpoint{}, false, nil
	}
	if redis.HasErrorPrefix(err, "WRONGTYPE") {
		return Checkpoint{}, false, fmt.Errorf("snapshots: reading the checkpoint of %s: %w", where(aggType, partition), &CorruptError{Key: key, Reason: "the key holds another Redis type than a string"})
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("snapshots: reading the checkpoint of %s from Redis (GET %s): %w; check that Redis is up and reachable", where(aggType, partition), key, err)
	}
	cp, reason := decodeCheckpoint(b)
	if reason != "" {
		return Checkpoint{}, false, fmt.Errorf("snapshots: reading the checkpoint of %s: %w", where(aggType, partition), &CorruptError{Key: key, Reason: reason})
	}
	return cp, true, nil
}

// Load returns the snapshot of aggregate id; ok is false when there is none.
func (r *Redis) Load(ctx context.Context, aggType string, partition int32, id string) (s Snapshot, ok bool, err error) {
	err = r.enter(ctx, aggType, partition)
	if err == nil {
		err = checkIDs([]string{id})
	}
	if err != nil {
		return Snapshot{}, false, fmt.Errorf("snapshots: loading %q of %s: %w", id, where(aggType, partition), err)
	}
	key := r.snapshotKey(aggType, partition, id)
	b, err := r.client.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return Snapshot{}, false, nil
	}
	if redis.HasErrorPrefix(err, "WRONGTYPE") {
		return Snapshot{}, false, fmt.Errorf("snapshots: loading %q of %s: %w", id, where(aggType, partition), &CorruptError{Key: key, Reason: "the key holds another Redis type than a string"})
	}
	if err != nil {
		return Snapshot{}, false, fmt.Errorf("snapshots: loading %q of %s from Redis (GET %s): %w; check that Redis is up and reachable", id, where(aggType, partition), key, err)
	}
	s, reason := decodeSnapshot(b)
	if reason != "" {
		return Snapshot{}, false, fmt.Errorf("snapshots: loading %q of %s: %w", id, where(aggType, partition), &CorruptError{Key: key, Reason: reason})
	}
	s.AggregateID = id
	return s, true, nil
}

// LoadMany returns the snapshots of the given ids that exist, keyed by id,
// read with one MGET (one round trip, one instant). Missing ids are absent
// from the map, and so are keys of another Redis type, which MGET reports as
// missing.
//
// When some stored values are corrupt the error matches ErrCorrupt (naming
// the first of them) and the map still holds every snapshot that decoded, so
// a caller may treat the corrupt ones as missing.
func (r *Redis) LoadMany(ctx context.Context, aggType string, partition int32, ids []string) (map[string]Snapshot, error) {
	err := r.enter(ctx, aggType, partition)
	if err == nil {
		err = checkIDs(ids)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshots: loading %d snapshots of %s: %w", len(ids), where(aggType, partition), err)
	}
	out := make(map[string]Snapshot, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]string, len(ids))
	prefix := r.snapshotKey(aggType, partition, "")
	for i, id := range ids {
		keys[i] = prefix + id
	}
	vals, err := r.client.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("snapshots: loading %d snapshots of %s from Redis (MGET): %w; check that Redis is up and reachable", len(ids), where(aggType, partition), err)
	}
	if err := r.decodeMany(ids, keys, vals, out); err != nil {
		return out, fmt.Errorf("snapshots: loading %d snapshots of %s: %w", len(ids), where(aggType, partition), err)
	}
	return out, nil
}

// decodeMany decodes MGET's answer for keys (of ids) into out. It returns a
// *CorruptError naming the first value that did not decode, after decoding
// all the others.
func (r *Redis) decodeMany(ids, keys []string, vals []any, out map[string]Snapshot) error {
	if len(vals) != len(keys) {
		return fmt.Errorf("redis answered MGET with %d values for %d keys", len(vals), len(keys))
	}
	var corrupt error
	for i, v := range vals {
		var b []byte
		switch v := v.(type) {
		case nil:
			continue
		case string:
			b = []byte(v)
		case []byte:
			b = v
		default:
			return fmt.Errorf("redis answered MGET with a %T for %s", v, keys[i])
		}
		s, reason := decodeSnapshot(b)
		if reason != "" {
			if corrupt == nil {
				corrupt = &CorruptError{Key: keys[i], Reason: reason}
			}
			continue
		}
		s.AggregateID = ids[i]
		out[ids[i]] = s
	}
	return corrupt
}

// Save stores snaps and, when cp is not nil, the checkpoint, atomically (see
// Atomic writes). A snapshot older than the stored one and a checkpoint
// behind the stored one are skipped; when snaps holds several snapshots of
// one aggregate, the highest Version counts.
func (r *Redis) Save(ctx context.Context, aggType string, partition int32, cp *Checkpoint, snaps []Snapshot) error {
	err := r.enter(ctx, aggType, partition)
	if err == nil {
		err = checkSnapshots(snaps)
	}
	if err != nil {
		return fmt.Errorf("snapshots: saving %d snapshots of %s: %w", len(snaps), where(aggType, partition), err)
	}
	if cp == nil && len(snaps) == 0 {
		return nil
	}
	if len(snaps) > 1 {
		snaps = newest(snaps)
	}
	keys := make([]string, 1+len(snaps))
	args := make([]any, 2+len(snaps))
	keys[0] = r.checkpointKey(aggType, partition)
	args[0] = ""
	args[len(args)-1] = "0"
	if cp != nil {
		args[0] = encodeCheckpoint(*cp)
		if cp.Continues {
			args[len(args)-1] = "1"
		}
	}
	prefix := r.snapshotKey(aggType, partition, "")
	for i, s := range snaps {
		keys[i+1] = prefix + s.AggregateID
		args[i+1] = encodeSnapshot(s)
	}
	res, err := r.save.Run(ctx, r.client, keys, args...).Int64Slice()
	if err == nil && len(res) == 3 && res[2] == 1 {
		return fmt.Errorf("snapshots: saving the checkpoint of %s: %w (the %d snapshots were saved)", where(aggType, partition), ErrCheckpointGone, len(snaps))
	}
	if err != nil {
		what := fmt.Sprintf("%d snapshots", len(snaps))
		if cp != nil {
			what += " and the checkpoint"
		}
		return fmt.Errorf("snapshots: saving %s of %s to Redis: %w; check that Redis is up, reachable and not out of memory (the Save was applied whole or not at all, and saving again is safe)", what, where(aggType, partition), err)
	}
	return nil
}

// Claim makes epoch the partition's lease, with Seq 0, and returns the
// checkpoint as it was at that instant, in one script (see Lease). When the
// stored checkpoint is corrupt the claim still took effect and the error
// matches ErrCorrupt: replay without it.
func (r *Redis) Claim(ctx context.Context, aggType string, partition int32, epoch string) (cp Checkpoint, ok bool, err error) {
	err = r.enter(ctx, aggType, partition)
	if err == nil {
		err = checkEpoch(epoch)
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("snapshots: claiming %s: %w", where(aggType, partition), err)
	}
	cpKey := r.checkpointKey(aggType, partition)
	res, err := r.claim.Run(ctx, r.client, []string{r.leaseKey(aggType, partition), cpKey}, Lease{Epoch: epoch}.encode()).Slice()
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("snapshots: claiming %s in Redis: %w; check that Redis is up, reachable and not out of memory", where(aggType, partition), err)
	}
	if len(res) != 2 {
		return Checkpoint{}, false, fmt.Errorf("snapshots: claiming %s: Redis answered with %d values, want 2", where(aggType, partition), len(res))
	}
	code, _ := res[0].(int64)
	switch code {
	case 0:
		return Checkpoint{}, false, nil
	case 2:
		return Checkpoint{}, false, fmt.Errorf("snapshots: claiming %s: %w", where(aggType, partition), &CorruptError{Key: cpKey, Reason: "the key holds another Redis type than a string"})
	}
	b, _ := res[1].(string)
	cp, reason := decodeCheckpoint([]byte(b))
	if reason != "" {
		return Checkpoint{}, false, fmt.Errorf("snapshots: claiming %s: %w", where(aggType, partition), &CorruptError{Key: cpKey, Reason: reason})
	}
	return cp, true, nil
}

// LoadLeased is LoadMany that reads the partition's lease in the same
// script (so at the same instant; a script because Redis refuses MULTI when
// it is out of memory, and reads must keep working then), loadBatch ids at a
// time, and refuses, with an error matching ErrLeaseLost and no
// snapshots, unless it is still lease (same epoch, Seq at least lease.Seq).
func (r *Redis) LoadLeased(ctx context.Context, aggType string, partition int32, lease Lease, ids []string) (map[string]Snapshot, error) {
	err := r.enter(ctx, aggType, partition)
	if err == nil {
		err = checkIDs(ids)
	}
	if err == nil {
		err = checkEpoch(lease.Epoch)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshots: loading %d snapshots of %s: %w", len(ids), where(aggType, partition), err)
	}
	keys := make([]string, len(ids))
	prefix := r.snapshotKey(aggType, partition, "")
	for i, id := range ids {
		keys[i] = prefix + id
	}
	out := make(map[string]Snapshot, len(ids))
	var corrupt error
	for {
		n := min(len(keys), loadBatch)
		err := r.loadLeasedBatch(ctx, aggType, partition, lease, ids[:n], keys[:n], out)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			return nil, err
		}
		if corrupt == nil {
			corrupt = err
		}
		ids, keys = ids[n:], keys[n:]
		if len(keys) == 0 {
			break
		}
	}
	return out, corrupt
}

// loadLeasedBatch runs loadScript for keys (of ids) and decodes into out.
func (r *Redis) loadLeasedBatch(ctx context.Context, aggType string, partition int32, lease Lease, ids, keys []string, out map[string]Snapshot) error {
	res, err := r.load.Run(ctx, r.client, append([]string{r.leaseKey(aggType, partition)}, keys...)).Slice()
	if err != nil {
		return fmt.Errorf("snapshots: loading %d snapshots of %s from Redis: %w; check that Redis is up and reachable", len(ids), where(aggType, partition), err)
	}
	if len(res) != 2 {
		return fmt.Errorf("snapshots: loading %d snapshots of %s: Redis answered with %d values, want 2", len(ids), where(aggType, partition), len(res))
	}
	var found *Lease
	if l, ok := res[0].(string); ok {
		if dl, ok := decodeLease(l); ok {
			found = &dl
		}
	}
	if err := checkLease(where(aggType, partition), lease, found); err != nil {
		return err
	}
	vals, _ := res[1].([]any)
	if len(keys) == 0 {
		return nil
	}
	if err := r.decodeMany(ids, keys, vals, out); err != nil {
		return fmt.Errorf("snapshots: loading %d snapshots of %s: %w", len(ids), where(aggType, partition), err)
	}
	return nil
}

// SaveLeased is Save made only while the partition's lease is still lease
// (same epoch, Seq at least lease.Seq), adding one to the stored Seq, in one
// script; it returns the new lease. When the lease is not ours nothing is
// written and the error matches ErrLeaseLost. Checkpoint.Continues is
// ignored.
func (r *Redis) SaveLeased(ctx context.Context, aggType string, partition int32, lease Lease, cp *Checkpoint, snaps []Snapshot) (Lease, error) {
	err := r.enter(ctx, aggType, partition)
	if err == nil {
		err = checkSnapshots(snaps)
	}
	if err == nil {
		err = checkEpoch(lease.Epoch)
	}
	if err != nil {
		return Lease{}, fmt.Errorf("snapshots: saving %d snapshots of %s: %w", len(snaps), where(aggType, partition), err)
	}
	if len(snaps) > 1 {
		snaps = newest(snaps)
	}
	keys := make([]string, 2+len(snaps))
	args := make([]any, 3+len(snaps))
	keys[0], keys[1] = r.leaseKey(aggType, partition), r.checkpointKey(aggType, partition)
	args[0], args[1], args[2] = lease.Epoch, lease.Seq, ""
	if cp != nil {
		args[2] = encodeCheckpoint(*cp)
	}
	prefix := r.snapshotKey(aggType, partition, "")
	for i, s := range snaps {
		keys[i+2] = prefix + s.AggregateID
		args[i+3] = encodeSnapshot(s)
	}
	res, err := r.saveLeased.Run(ctx, r.client, keys, args...).Slice()
	if err != nil {
		what := fmt.Sprintf("%d snapshots", len(snaps))
		if cp != nil {
			what += " and the checkpoint"
		}
		return Lease{}, fmt.Errorf("snapshots: saving %s of %s to Redis: %w; check that Redis is up, reachable and not out of memory (the save was applied whole or not at all, and saving again is safe)", what, where(aggType, partition), err)
	}
	code, _ := res[0].(int64)
	if code >= 0 {
		return Lease{Epoch: lease.Epoch, Seq: code}, nil
	}
	var found *Lease
	if len(res) == 3 {
		seq, _ := res[1].(int64)
		ep, _ := res[2].(string)
		found = &Lease{Epoch: ep, Seq: seq}
	}
	return Lease{}, checkLease(where(aggType, partition), lease, found)
}

// DropPartition deletes the partition's lease, checkpoint and snapshots.
//
// The lease goes first, so a holder of it learns at its next load that
// the snapshots are gone. The checkpoint goes first and, once more, last: whatever a concurrent Save
// writes meanwhile, no checkpoint survives that claims snapshots this call
// removed. Snapshots are found with SCAN on the node that owns the
// partition's slot and removed with UNLINK, dropBatch at a time, so a large
// partition does not block Redis; the time it takes grows with the node's
// key count. If it fails midway, calling it again finishes the job.
func (r *Redis) DropPartition(ctx context.Context, aggType string, partition int32) error {
	if err := r.enter(ctx, aggType, partition); err != nil {
		return fmt.Errorf("snapshots: dropping %s: %w", where(aggType, partition), err)
	}
	cpKey := r.checkpointKey(aggType, partition)
	if err := r.client.Unlink(ctx, r.leaseKey(aggType, partition), cpKey).Err(); err != nil {
		return fmt.Errorf("snapshots: dropping %s: deleting its lease and checkpoint: %w; check that Redis is up and reachable, then retry", where(aggType, partition), err)
	}
	node, err := r.nodeFor(ctx, cpKey)
	if err != nil {
		return fmt.Errorf("snapshots: dropping %s: finding the Redis node of slot %s: %w; check that the cluster is healthy, then retry", where(aggType, partition), cpKey, err)
	}
	pattern := globEscape(r.snapshotKey(aggType, partition, "")) + "*"
	var cursor uint64
	for {
		keys, next, err := node.Scan(ctx, cursor, pattern, dropBatch).Result()
		if err != nil {
			return fmt.Errorf("snapshots: dropping %s: scanning for its snapshots: %w; check that Redis is up and reachable, then retry", where(aggType, partition), err)
		}
		if len(keys) > 0 {
			if err := node.Unlink(ctx, keys...).Err(); err != nil {
				return fmt.Errorf("snapshots: dropping %s: deleting %d snapshots: %w; check that Redis is up and reachable, then retry", where(aggType, partition), len(keys), err)
			}
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	if err := r.client.Unlink(ctx, cpKey).Err(); err != nil {
		return fmt.Errorf("snapshots: dropping %s: deleting its checkpoint: %w; check that Redis is up and reachable, then retry", where(aggType, partition), err)
	}
	return nil
}

// nodeFor returns the client that holds key: the owning master on Cluster,
// the shard on a Ring, the client itself otherwise. SCAN must go there since
// it takes no key to route by.
func (r *Redis) nodeFor(ctx context.Context, key string) (redis.Cmdable, error) {
	switch c := r.client.(type) {
	case *redis.ClusterClient:
		return c.MasterForKey(ctx, key)
	case *redis.Ring:
		return c.GetShardClientForKey(key)
	default:
		return r.client, nil
	}
}

// Close stops the store. It closes the client when Open created it, and
// leaves a client passed to NewRedis open. Later calls return ErrClosed; a
// second Close returns nil.
func (r *Redis) Close() error {
	if r.closed.Swap(true) || !r.ownsClient {
		return nil
	}
	if err := r.client.Close(); err != nil {
		return fmt.Errorf("snapshots: closing the Redis client: %w", err)
	}
	return nil
}

// enter checks what every method checks first.
func (r *Redis) enter(ctx context.Context, aggType string, partition int32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.closed.Load() {
		return ErrClosed
	}
	return checkPartition(aggType, partition)
}

// tag returns the partition's Cluster hash tag with the key prefix:
// "chronicle:{order.3}". The partition number after the last dot keeps
// ("order", 13) and ("order.1", 3) apart.
func (r *Redis) tag(aggType string, partition int32) string {
	var b strings.Builder
	b.Grow(len(r.prefix) + len(aggType) + 14)
	b.WriteString(r.prefix)
	b.WriteByte('{')
	b.WriteString(aggType)
	b.WriteByte('.')
	b.WriteString(strconv.FormatInt(int64(partition), 10))
	b.WriteByte('}')
	return b.String()
}

func (r *Redis) checkpointKey(aggType string, partition int32) string {
	return r.tag(aggType, partition) + ":cp"
}

func (r *Redis) leaseKey(aggType string, partition int32) string {
	return r.tag(aggType, partition) + ":lease"
}

func (r *Redis) snapshotKey(aggType string, partition int32, id string) string {
	return r.tag(aggType, partition) + ":s:" + id
}

// globEscape escapes the characters SCAN MATCH treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		switch c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}
