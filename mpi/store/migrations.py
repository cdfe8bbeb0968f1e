"""Ordered, append-only schema migrations of the registry, tracked in ``schema_version``.

Owns: the DDL of every registry table. Must not: change a migration that has shipped; add a
new one at the end instead.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "linkage core: records, versions, persons, key events, review items", (
        """CREATE TABLE agency (
            agency VARCHAR PRIMARY KEY,
            created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE linkage_key (
            key_id VARCHAR PRIMARY KEY,
            schema_version INTEGER NOT NULL,
            first_seen_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE source_record (
            record_seq BIGINT PRIMARY KEY,
            agency VARCHAR NOT NULL,
            source_record_id VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            status VARCHAR NOT NULL,
            person_key VARCHAR,
            content_hash BIGINT NOT NULL,
            key_id VARCHAR NOT NULL,
            research_consent BOOLEAN,
            attributes VARCHAR,
            tokens BIGINT[] NOT NULL,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL)""",
        "CREATE UNIQUE INDEX source_record_agency_sid ON source_record (agency, source_record_id)",
        """CREATE TABLE record_version (
            record_seq BIGINT NOT NULL,
            version INTEGER NOT NULL,
            status VARCHAR NOT NULL,
            content_hash BIGINT NOT NULL,
            key_id VARCHAR NOT NULL,
            research_consent BOOLEAN,
            attributes VARCHAR,
            tokens BIGINT[] NOT NULL,
            recorded_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE person (
            person_key VARCHAR PRIMARY KEY,
            status VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            retired_at TIMESTAMP)""",
        """CREATE TABLE key_lineage (
            from_key VARCHAR NOT NULL,
            to_key VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            event_seq BIGINT NOT NULL)""",
        """CREATE TABLE key_event (
            event_seq BIGINT NOT NULL,
            person_key VARCHAR NOT NULL,
            event_type VARCHAR NOT NULL,
            cause VARCHAR NOT NULL,
            model_version VARCHAR,
            related_key VARCHAR,
            record_seq BIGINT,
            occurred_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE review_item (
            item_seq BIGINT NOT NULL,
            kind VARCHAR NOT NULL,
            record_seq BIGINT,
            person_key VARCHAR NOT NULL,
            other_person_key VARCHAR,
            match_weight DOUBLE NOT NULL,
            match_probability DOUBLE NOT NULL,
            status VARCHAR NOT NULL,
            model_version VARCHAR,
            created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE model_activation (
            model_version VARCHAR NOT NULL,
            activated_at TIMESTAMP NOT NULL)""",
    )),
    (2, "audit log (hash chain), principals, idempotency keys, jobs", (
        """CREATE TABLE audit_event (
            audit_seq BIGINT PRIMARY KEY,
            occurred_at TIMESTAMP NOT NULL,
            principal VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            target VARCHAR NOT NULL,
            outcome VARCHAR NOT NULL,
            detail VARCHAR,
            prev_hash VARCHAR NOT NULL,
            entry_hash VARCHAR NOT NULL)""",
        """CREATE TABLE principal (
            principal_id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            role VARCHAR NOT NULL,
            agency VARCHAR,
            created_at TIMESTAMP NOT NULL,
            revoked_at TIMESTAMP)""",
        """CREATE TABLE api_key (
            key_hash VARCHAR PRIMARY KEY,
            principal_id VARCHAR NOT NULL,
            key_prefix VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            revoked_at TIMESTAMP)""",
        """CREATE TABLE idempotency_key (
            principal_id VARCHAR NOT NULL,
            idempotency_key VARCHAR NOT NULL,
            request_hash VARCHAR NOT NULL,
            response VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (principal_id, idempotency_key))""",
        """CREATE TABLE job (
            job_id VARCHAR PRIMARY KEY,
            principal_id VARCHAR NOT NULL,
            agency VARCHAR,
            kind VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            total BIGINT,
            done BIGINT NOT NULL,
            counts VARCHAR,
            errors VARCHAR,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL)""",
    )),
    (3, "a key's mint event lives on its person row; key_event becomes a view", (
        "ALTER TABLE key_event RENAME TO key_change",
        "ALTER TABLE person ADD COLUMN minted_event_seq BIGINT",
        "ALTER TABLE person ADD COLUMN minted_cause VARCHAR",
        "ALTER TABLE person ADD COLUMN minted_model_version VARCHAR",
        "ALTER TABLE person ADD COLUMN minted_record_seq BIGINT",
        """UPDATE person SET minted_event_seq = c.event_seq, minted_cause = c.cause,
            minted_model_version = c.model_version, minted_record_seq = c.record_seq
            FROM key_change c WHERE c.person_key = person.person_key
            AND c.event_type = 'minted'""",
        "DELETE FROM key_change WHERE event_type = 'minted'",
        """CREATE VIEW key_event AS
            SELECT event_seq, person_key, event_type, cause, model_version, related_key,
                   record_seq, occurred_at FROM key_change
            UNION ALL
            SELECT minted_event_seq, person_key, 'minted', minted_cause, minted_model_version,
                   NULL, minted_record_seq, created_at FROM person
            WHERE minted_event_seq IS NOT NULL""",
    )),
    (4, "steward labels (record pairs) and link constraints; review decisions", (
        """CREATE TABLE label (
            label_seq BIGINT PRIMARY KEY,
            record_seq_a BIGINT NOT NULL,
            record_seq_b BIGINT NOT NULL,
            is_match BOOLEAN NOT NULL,
            source VARCHAR NOT NULL,
            reason VARCHAR,
            principal_id VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            revoked_at TIMESTAMP)""",
    )),
    (5, "research extracts: data dictionaries, requests, approvals, builds, disclosures", (
        """CREATE TABLE dataset (
            agency VARCHAR NOT NULL,
            dataset VARCHAR NOT NULL,
            description VARCHAR,
            updated_by VARCHAR NOT NULL,
            updated_at TIMESTAMP NOT NULL,
            PRIMARY KEY (agency, dataset))""",
        """CREATE TABLE dataset_attribute (
            agency VARCHAR NOT NULL,
            dataset VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            type VARCHAR NOT NULL,
            description VARCHAR NOT NULL,
            klass VARCHAR NOT NULL,
            allowed_generalizations VARCHAR NOT NULL,
            default_generalization VARCHAR NOT NULL,
            PRIMARY KEY (agency, dataset, name))""",
        """CREATE TABLE extract_request (
            extract_id VARCHAR PRIMARY KEY,
            requester_id VARCHAR NOT NULL,
            title VARCHAR NOT NULL,
            purpose VARCHAR NOT NULL,
            agreement_ref VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            spec VARCHAR NOT NULL,
            agencies VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            expires_at TIMESTAMP NOT NULL,
            download_limit INTEGER NOT NULL,
            downloads INTEGER NOT NULL,
            build_state VARCHAR NOT NULL,
            build_error VARCHAR,
            created_at TIMESTAMP NOT NULL,
            decided_at TIMESTAMP,
            approved_at TIMESTAMP,
            delivered_at TIMESTAMP,
            closed_at TIMESTAMP)""",
        """CREATE TABLE extract_approval (
            extract_id VARCHAR NOT NULL,
            principal_id VARCHAR NOT NULL,
            capacity VARCHAR NOT NULL,
            decision VARCHAR NOT NULL,
            reason VARCHAR,
            decided_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE extract_build (
            extract_id VARCHAR NOT NULL,
            build_seq INTEGER NOT NULL,
            built_at TIMESTAMP NOT NULL,
            rows BIGINT NOT NULL,
            persons BIGINT NOT NULL,
            manifest_sha256 VARCHAR NOT NULL,
            first_delivered_at TIMESTAMP,
            PRIMARY KEY (extract_id, build_seq))""",
        """CREATE TABLE extract_person (
            extract_id VARCHAR NOT NULL,
            build_seq INTEGER NOT NULL,
            person_key VARCHAR NOT NULL)""",
    )),
)
