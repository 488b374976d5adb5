"""The SQL forms of the reputation policies, and the function that scores and records an
outcome with them (PostgreSQL only), so that a settlement's one statement scores its task
without a read of the agent's standing beforehand (SPEC §20).

Each form gives, as stored, what the Python form (reputation/policies.py) gives; the
property test tests/test_reputation_sql.py holds them to it. Decimal arithmetic is
rounded the way Python's Decimal rounds it: quantized to 4 places half to even, computed
exactly from integer quotients.

`reputation_settle` takes the agent's reputation row lock first. A plpgsql function's
queries each take a snapshot of their own, so what it reads after the lock (the
requester's moves of the day, whether they ever scored) includes every event committed
by a settlement it waited for: the same read under the lock as `reputation_apply`'s.
"""

from django.db import migrations

CREATE = [
    # x / y to 4 places, half to even (y > 0): Python's Decimal quantize(Decimal("0.0001")).
    # One expression (no FROM, not STRICT), so that the planner inlines it where it is called.
    """
    CREATE OR REPLACE FUNCTION reputation_quantize(x numeric, y numeric) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT sign(x) * (div(abs(x) * 10000, y) + CASE
            WHEN 2 * (abs(x) * 10000 - div(abs(x) * 10000, y) * y) > y THEN 1
            WHEN 2 * (abs(x) * 10000 - div(abs(x) * 10000, y) * y) < y THEN 0
            ELSE mod(div(abs(x) * 10000, y), 2) END) * 0.0001
    $$
    """,
    # DefaultPolicy.delta: +2.0, + up to 1.0 for unused fuel, + 0.5 under a second; -5.0.
    """
    CREATE OR REPLACE FUNCTION reputation_default_delta(
        kind text, fuel_used bigint, fuel_limit bigint, elapsed_ms integer
    ) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CASE kind
            WHEN 'success' THEN 2.0
                + CASE WHEN fuel_limit > 0 THEN reputation_quantize(
                    greatest(0, least(fuel_limit, fuel_limit - fuel_used)), fuel_limit)
                  ELSE 0 END
                + CASE WHEN elapsed_ms < 1000 THEN 0.5 ELSE 0 END
            WHEN 'failure' THEN -5.0
            ELSE 0 END
    $$
    """,
    # DefaultPolicy.next_score, and .capped when the move exceeds the allowance (> 0).
    """
    CREATE OR REPLACE FUNCTION reputation_default_policy(
        score numeric, successes numeric, failures numeric, kind text,
        fuel_used bigint, fuel_limit bigint, elapsed_ms integer, allowance numeric,
        OUT after numeric, OUT weight numeric
    ) LANGUAGE plpgsql IMMUTABLE AS $$
    DECLARE
        full_delta numeric := reputation_default_delta(kind, fuel_used, fuel_limit, elapsed_ms);
        move numeric;
    BEGIN
        after := greatest(0, least(100, score + full_delta));
        weight := 1;
        IF allowance IS NULL OR abs(after - score) <= allowance THEN
            RETURN;
        END IF;
        move := least(abs(full_delta), allowance);
        IF full_delta = 0 OR move <= 0 THEN
            after := score;
            weight := 0;
            RETURN;
        END IF;
        after := greatest(0, least(100, score + sign(full_delta) * move));
        weight := div(move * 100000000, abs(full_delta)) * 0.00000001;
    END
    $$
    """,
    # BetaPolicy._mean: 100 × (successes + 1) / (successes + failures + 2), the outcome
    # added with `weight` (one expression, inlined where it is called).
    """
    CREATE OR REPLACE FUNCTION reputation_beta_mean(
        successes numeric, failures numeric, kind text, weight numeric
    ) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT greatest(0, least(100, reputation_quantize(
            100 * (successes + CASE WHEN kind = 'success' THEN weight ELSE 0 END + 1),
            successes + failures + CASE WHEN kind IN ('success', 'failure') THEN weight
                                        ELSE 0 END + 2)))
    $$
    """,
    # BetaPolicy.next_score, and .capped (the same search for the largest share that fits).
    """
    CREATE OR REPLACE FUNCTION reputation_beta_policy(
        score numeric, successes numeric, failures numeric, kind text,
        fuel_used bigint, fuel_limit bigint, elapsed_ms integer, allowance numeric,
        OUT after numeric, OUT weight numeric
    ) LANGUAGE plpgsql IMMUTABLE AS $$
    DECLARE
        push integer := CASE WHEN kind = 'success' THEN 1 ELSE -1 END;
        low bigint := 0;
        high bigint := 100000000;
        middle bigint;
        mean numeric;
    BEGIN
        after := reputation_beta_mean(successes, failures, kind, 1);
        weight := 1;
        IF allowance IS NULL OR abs(after - score) <= allowance THEN
            RETURN;
        END IF;
        IF push * (reputation_beta_mean(successes, failures, kind, 0) - score) <= allowance THEN
            WHILE low < high LOOP
                middle := (low + high + 1) / 2;
                IF push * (reputation_beta_mean(successes, failures, kind,
                                                middle * 0.00000001) - score) <= allowance THEN
                    low := middle;
                ELSE
                    high := middle - 1;
                END IF;
            END LOOP;
            weight := low * 0.00000001;
            mean := reputation_beta_mean(successes, failures, kind, weight);
            IF abs(mean - score) <= allowance THEN
                after := mean;
                RETURN;
            END IF;
        END IF;
        after := greatest(0, least(100,
            score + greatest(-allowance, least(allowance, after - score))));
        weight := 0;
    END
    $$
    """,
    # score_outcome within the requester's daily cap, then the agent's row and the event,
    # and the fuel sample that goes with it (`p_kind` NULL: the sample alone, no event).
    """
    CREATE OR REPLACE FUNCTION reputation_settle(
        p_agent bigint, p_task uuid, p_requester bigint, p_kind text, p_reason text,
        p_neutral_reason text, p_policy text, p_form text, p_day date, p_cap numeric,
        p_fuel_used bigint, p_fuel_limit bigint, p_elapsed_ms integer, p_at timestamptz,
        p_sample_binary bigint, p_sample_fuel bigint, p_sample_bytes bigint,
        p_sample_ring integer,
        OUT event_id bigint, OUT delta numeric
    ) LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
        rep reputation_agentreputation%ROWTYPE;
        kind text := p_kind;
        neutral_reason text := p_neutral_reason;
        allowance numeric;
        known boolean := true;
        after numeric;
        weight numeric := 0;
    BEGIN
        SELECT * INTO rep FROM reputation_agentreputation
        WHERE agent_id = p_agent FOR NO KEY UPDATE;
        IF NOT FOUND THEN  -- agents get their row when created; this is for older data
            INSERT INTO reputation_agentreputation (agent_id, score, successes, failures,
                neutral, evidence_successes, evidence_failures, requesters, updated_at)
            VALUES (p_agent, 50, 0, 0, 0, 0, 0, 0, p_at) ON CONFLICT DO NOTHING;
            SELECT * INTO rep FROM reputation_agentreputation
            WHERE agent_id = p_agent FOR NO KEY UPDATE;
        END IF;
        IF kind IS NOT NULL THEN
            -- Only what scoring this outcome needs is read: the day's moves for an outcome
            -- that may move the score, whether the requester ever scored for one that did.
            IF p_requester IS NOT NULL AND kind <> 'neutral' THEN
                SELECT p_cap - COALESCE(sum(abs(e.delta)), 0) INTO allowance
                FROM reputation_reputationevent AS e
                WHERE e.agent_id = p_agent AND e.requester_id = p_requester
                    AND e.settled_on = p_day AND e.delta <> 0;
            END IF;
            after := rep.score;
            IF kind = 'neutral' THEN
                NULL;
            ELSIF allowance <= 0 THEN
                kind := 'neutral';
                neutral_reason := 'daily_cap';
            ELSIF p_form = 'default' THEN
                SELECT * INTO after, weight FROM reputation_default_policy(rep.score,
                    rep.evidence_successes, rep.evidence_failures, kind, p_fuel_used,
                    p_fuel_limit, p_elapsed_ms, allowance);
            ELSIF p_form = 'beta' THEN
                SELECT * INTO after, weight FROM reputation_beta_policy(rep.score,
                    rep.evidence_successes, rep.evidence_failures, kind, p_fuel_used,
                    p_fuel_limit, p_elapsed_ms, allowance);
            ELSE
                RAISE EXCEPTION 'no SQL form % of a reputation policy', p_form;
            END IF;
            IF p_requester IS NOT NULL AND kind <> 'neutral' THEN
                known := EXISTS (
                    SELECT 1 FROM reputation_reputationevent AS e
                    WHERE e.agent_id = p_agent AND e.requester_id = p_requester
                        AND e.outcome <> 'neutral');
            END IF;
            UPDATE reputation_agentreputation SET
                score = after,
                successes = successes + (kind = 'success')::integer,
                failures = failures + (kind = 'failure')::integer,
                neutral = neutral + (kind = 'neutral')::integer,
                evidence_successes = evidence_successes
                    + CASE WHEN kind = 'success' THEN weight ELSE 0 END,
                evidence_failures = evidence_failures
                    + CASE WHEN kind = 'failure' THEN weight ELSE 0 END,
                requesters = requesters
                    + (p_requester IS NOT NULL AND NOT known AND kind <> 'neutral')::integer,
                updated_at = p_at
            WHERE agent_id = p_agent;
            INSERT INTO reputation_reputationevent (agent_id, task_id, requester_id, outcome,
                reason, neutral_reason, policy, settled_on, daily_cap, weight, fuel_used,
                fuel_limit, elapsed_ms, delta, score_before, score_after, created_at)
            VALUES (p_agent, p_task, p_requester, kind, p_reason, neutral_reason, p_policy,
                p_day, p_cap, weight, p_fuel_used, p_fuel_limit, p_elapsed_ms,
                after - rep.score, rep.score, after, p_at)
            RETURNING id INTO event_id;
            delta := after - rep.score;
        END IF;
        IF p_sample_binary IS NOT NULL THEN
            -- Under the agent's row lock, which every sample of its binaries is written
            -- under: the latest sequence number read here is the latest there is.
            INSERT INTO marketplace_fuelsample (binary_id, slot, seq, fuel_used, input_bytes,
                recorded_at)
            SELECT p_sample_binary, (m + 1) % p_sample_ring, m + 1, p_sample_fuel,
                p_sample_bytes, p_at
            FROM (SELECT COALESCE(max(seq), 0) AS m FROM marketplace_fuelsample
                  WHERE binary_id = p_sample_binary) AS latest
            ON CONFLICT (binary_id, slot) DO UPDATE SET seq = excluded.seq,
                fuel_used = excluded.fuel_used, input_bytes = excluded.input_bytes,
                recorded_at = excluded.recorded_at;
        END IF;
    END
    $$
    """,
]
DROP = [
    "DROP FUNCTION IF EXISTS reputation_settle(bigint, uuid, bigint, text, text, text, text, "
    "text, date, numeric, bigint, bigint, integer, timestamptz, bigint, bigint, bigint, integer)",
    "DROP FUNCTION IF EXISTS reputation_beta_policy(numeric, numeric, numeric, text, bigint, "
    "bigint, integer, numeric)",
    "DROP FUNCTION IF EXISTS reputation_beta_mean(numeric, numeric, text, numeric)",
    "DROP FUNCTION IF EXISTS reputation_default_policy(numeric, numeric, numeric, text, bigint, "
    "bigint, integer, numeric)",
    "DROP FUNCTION IF EXISTS reputation_default_delta(text, bigint, bigint, integer)",
    "DROP FUNCTION IF EXISTS reputation_quantize(numeric, numeric)",
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for sql in CREATE:
            schema_editor.execute(sql, None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for sql in DROP:
            schema_editor.execute(sql, None)


class Migration(migrations.Migration):
    dependencies = [
        ("reputation", "0005_event_partial_indexes"),
        ("marketplace", "0008_webhooks_quotes"),
    ]

    operations = [migrations.RunPython(create, drop)]
