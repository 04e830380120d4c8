// Package eventagg deduplicates and durably stores batches of events.
//
// Producers deliver at least once and may resend freely: eventagg stores each
// distinct (topic, event_id) exactly once and counts every copy it drops.
//
//	store, err := eventagg.OpenSQLite("events.db", nil)
//	if err != nil { ... }
//	defer store.Close()
//	agg, err := eventagg.New(store, nil)
//	if err != nil { ... }
//	defer agg.Shutdown(ctx) // drains queued publishes; runs before store.Close
//	res, err := agg.Publish(ctx, eventagg.Event{Topic: "orders", EventID: "o-1"})
//	// res.Processed == 1; publishing the same event again gives res.Duplicates == 1.
//
// # Packages
//
// Applications need this package: the [Aggregator], the [Event] and its
// outcomes, the embedded [SQLiteStore]. Package httpapi serves an
// Aggregator over HTTP and holds a client with the same [Publisher]
// method; package postgres holds a store for several replicas. Those who
// write a [Store] of their own use package driver (paging, in-batch
// deduplication, payload digests, counter arithmetic) and check it with
// package storetest.
//
// # Identity, duplicates and conflicts
//
// An [Event] is identified by its [Key], the pair (Topic, EventID), compared
// byte for byte. The same EventID on two topics names two events. The first
// copy a store accepts is kept, with its timestamp, source and payload;
// later copies are dropped. Each event's [Outcome] says which it was:
// [Stored] (with its sequence number), [Duplicate] (the same payload as the
// stored copy, byte for byte: a resend), or [Conflict] (another payload: a
// producer reused an id, or changed an event it resends). Within one batch,
// a later copy of a key is compared with the earlier one. Conflicts are
// counted apart; with [Options].RejectConflicts a call holding one is
// refused whole, with a [*ConflictError].
//
// A batch is validated whole before anything is written (see [Event.Validate]):
// one invalid event rejects the batch with a [*ValidationError] naming its
// index and field, and nothing of the batch is stored or counted.
//
// # Durability
//
// [Aggregator.Publish] returns nil only after the transaction that holds the
// batch has committed: an acknowledged event is stored. With [SQLiteStore] and
// its default [SyncFull], the commit is on disk when Publish returns, and
// survives a crash of the process or the machine. Events and counters change
// in the same transaction, so they always agree.
//
// A store that can no longer vouch for what it acknowledges (its files were
// deleted, replaced or truncated under it, it read corrupt data, an fsync
// failed) refuses every write with an error matching [ErrDamaged] until it
// is reopened, so that nothing is acknowledged that a restart would lose. A
// write that finds no room fails with an error matching [ErrFull] and
// succeeds once there is room again.
//
// # Group commit
//
// An [Aggregator] queues concurrent Publish calls to one writer goroutine. The
// writer merges whatever is waiting, up to [Options].MaxEventsPerCommit
// events, into a single commit, then hands each caller its own part of the
// result. Many small batches thus share one transaction and one fsync. With
// a store that implements [Pipeliner], as SQLiteStore does, the writer also
// overlaps: it commits the next batch while the previous one is made
// durable, and the callers of a batch are answered, in commit order, once it
// is. The queue is bounded by [Options].QueueSize: when it is full, Publish
// blocks until there is room, its context ends or [Options].QueueTimeout
// passes, and then returns [ErrQueueFull]. [Aggregator.Shutdown] drains the
// queue, or gives up when its context ends.
//
// # Stores
//
// A [Store] is a small interface with an atomic Append. This package provides:
//   - [SQLiteStore], the embedded default: one SQLite file in WAL mode, on
//     github.com/ncruces/go-sqlite3 (no cgo);
//   - [MemoryStore], for tests and ephemeral use.
//
// Package github.com/eventagg/eventagg/postgres provides a store that several
// Aggregator replicas share, with deduplication and counters exact across
// them. Optional capabilities ([Pipeliner], [Pinger], [StatsQuerier],
// [MetricsReporter]) let a store do more, each with a fallback.
//
// # Retention
//
// By default events stay forever. With [Options].Retention an event leaves
// once that long has passed since the store accepted it, oldest first, and
// counts as expired; its key leaves with it (a later copy is stored as new)
// unless [Options].DedupWindow keeps keys longer. The store must implement
// [Expirer], as this package's stores and package postgres's do.
//
// # Stats
//
// Each store keeps its counters, overall and per topic (see [Stats]):
// received, unique_processed, duplicate_dropped, conflicts, stored and
// expired. At every moment, across restarts and crashes, received =
// unique_processed + duplicate_dropped, conflicts <= duplicate_dropped,
// unique_processed = stored + expired, and stored equals the number of
// events a full listing returns. [Aggregator.QueryStats] reads the totals
// and one page of topics, however many topics there are.
//
// # Listing
//
// Stored events are listed in acceptance order by [Aggregator.Events], each
// with a sequence number (Seq) that only grows. Pass the last Seq seen as
// [Query].After to read the next page.
//
// # Following
//
// [Aggregator.Follow] lists the stored events and then each new one as soon
// as it is durable, until its context ends; [Aggregator.Tail] gives the same
// page by page. A follower holds a page, never a backlog: one that falls
// behind reads from the store by cursor. Followers in one process are woken
// by the writer; a store shared by replicas wakes them across processes if
// it is a [Watcher], as package postgres's is.
//
// # Processing once
//
// A service that must process each delivery once claims its key before the
// work and completes the claim after it ([Aggregator.Once], or
// [Aggregator.Claim], [Aggregator.Complete] and [Aggregator.Release]): the
// completion stores the event and marks the key done in one transaction. A
// crash in between leaves the claim to lapse with its lease, and the next
// delivery does the work again; a fencing token keeps a claimant whose
// lease lapsed from completing after another took the key over. Claims are
// a store capability, [Claimer], of this module's stores.
package eventagg
