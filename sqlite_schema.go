package eventagg

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Schema identification, kept in the database header.
const (
	sqliteApplicationID = 0x45564147 // "EVAG"
	sqliteSchemaVersion = 4
)

// sqliteMigrations[v] moves a database from schema version v to v+1.
// Versions are recorded in PRAGMA user_version; add new steps at the end.
var sqliteMigrations = []string{
	0: `
CREATE TABLE topics (
	id                INTEGER PRIMARY KEY,
	name              TEXT NOT NULL UNIQUE,
	received          INTEGER NOT NULL DEFAULT 0,
	unique_processed  INTEGER NOT NULL DEFAULT 0,
	duplicate_dropped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE events (
	seq      INTEGER PRIMARY KEY,
	topic_id INTEGER NOT NULL REFERENCES topics (id),
	event_id TEXT NOT NULL,
	ts       INTEGER NOT NULL,
	source   TEXT NOT NULL DEFAULT '',
	payload  BLOB,
	UNIQUE (topic_id, event_id)
);
CREATE INDEX events_topic_seq ON events (topic_id, seq);
`,
	// Conflicts: a duplicate whose payload differs from the stored copy's.
	1: `
ALTER TABLE topics ADD COLUMN conflicts INTEGER NOT NULL DEFAULT 0;
`,
	// Retention (see sqlite_expire.go): when the store accepted each event,
	// in nanoseconds ({now}, the time of the upgrade, for events stored
	// before it), the events that left per topic, the digest of a kept key's
	// payload, and the prefixes that have left.
	2: `
ALTER TABLE events ADD COLUMN accepted INTEGER NOT NULL DEFAULT {now};
ALTER TABLE events ADD COLUMN phash BLOB;
ALTER TABLE topics ADD COLUMN expired INTEGER NOT NULL DEFAULT 0;
CREATE TABLE retention (
	id       INTEGER PRIMARY KEY CHECK (id = 1),
	payloads INTEGER NOT NULL,
	keys     INTEGER NOT NULL
);
INSERT INTO retention VALUES (1, 0, 0);
`,
	// Claims (see sqlite_claims.go): the claims held, or lapsed and not
	// taken over yet, by key; the last fencing token handed out and the
	// claims taken over after their lease ran out.
	3: `
CREATE TABLE claims (
	topic    TEXT NOT NULL,
	event_id TEXT NOT NULL,
	token    INTEGER NOT NULL,
	expires  INTEGER NOT NULL,
	PRIMARY KEY (topic, event_id)
) WITHOUT ROWID;
CREATE INDEX claims_expires ON claims (expires); -- ClaimCounts counts by it
CREATE TABLE claim_state (
	id         INTEGER PRIMARY KEY CHECK (id = 1),
	last_token INTEGER NOT NULL,
	expired    INTEGER NOT NULL
);
INSERT INTO claim_state VALUES (1, 0, 0);
`,
}

// migrate creates or upgrades the schema in one transaction.
func (s *SQLiteStore) migrate() (err error) {
	tx, err := s.w.BeginImmediate()
	if err != nil {
		return err
	}
	if err = s.migrateTx(); err == nil {
		return tx.Commit()
	}
	return errors.Join(err, tx.Rollback())
}

func (s *SQLiteStore) migrateTx() error {
	appID, err := pragmaInt(s.w, "application_id")
	if err != nil {
		return err
	}
	version, err := pragmaInt(s.w, "user_version")
	if err != nil {
		return err
	}
	switch {
	case appID == 0 && version == 0:
		var objects int64
		stmt, _, err := s.w.Prepare(`SELECT count(*) FROM sqlite_schema`)
		if err != nil {
			return err
		}
		if stmt.Step() {
			objects = stmt.ColumnInt64(0)
		}
		if err := errors.Join(stmt.Err(), stmt.Close()); err != nil {
			return err
		}
		if objects > 0 {
			return errors.New("not an eventagg database (it holds other tables)")
		}
	case appID != sqliteApplicationID:
		return fmt.Errorf("not an eventagg database (application_id %#x)", appID)
	case version > sqliteSchemaVersion:
		return fmt.Errorf("database schema version %d is newer than this eventagg supports (%d): upgrade eventagg",
			version, sqliteSchemaVersion)
	}
	for v := version; v < sqliteSchemaVersion; v++ {
		sql := strings.ReplaceAll(sqliteMigrations[v], "{now}", strconv.FormatInt(time.Now().UnixNano(), 10))
		if err := s.w.Exec(sql); err != nil {
			return fmt.Errorf("migrate schema %d to %d: %w", v, v+1, err)
		}
	}
	if version < sqliteSchemaVersion {
		return s.w.Exec(fmt.Sprintf(`PRAGMA application_id=%d; PRAGMA user_version=%d`,
			sqliteApplicationID, sqliteSchemaVersion))
	}
	return nil
}
