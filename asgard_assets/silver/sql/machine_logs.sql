-- silver.machine_logs: trimmed, upper-cased ids, lower-cased event types, one row per log id.
WITH normalized AS (
    SELECT
        UPPER(TRIM(CAST(log_id AS STRING))) AS log_id,
        UPPER(TRIM(CAST(machine_id AS STRING))) AS machine_id,
        COALESCE(NULLIF(UPPER(TRIM(CAST(operator_id AS STRING))), ''), 'UNASSIGNED') AS operator_id,
        LOWER(TRIM(CAST(event_type AS STRING))) AS event_type,
        CAST(temperature_c AS DOUBLE) AS temperature_c,
        CAST(vibration_mm_s AS DOUBLE) AS vibration_mm_s,
        CAST(event_time AS TIMESTAMP_NTZ) AS event_time,
        CAST(updated_at AS TIMESTAMP_NTZ) AS updated_at,
        _asgard_loaded_at
    FROM bronze.machine_logs
),

latest AS (
    SELECT
        *,
        ROW_NUMBER() OVER (
            PARTITION BY log_id ORDER BY updated_at DESC, _asgard_loaded_at DESC
        ) AS version_rank
    FROM normalized
    WHERE log_id IS NOT NULL AND log_id <> ''
)

SELECT
    log_id,
    machine_id,
    operator_id,
    event_type,
    temperature_c,
    vibration_mm_s,
    event_time,
    updated_at,
    CASE
        WHEN temperature_c IS NULL OR temperature_c NOT BETWEEN -40 AND 200 THEN 'INVALID'
        WHEN vibration_mm_s < 0 THEN 'INVALID'
        ELSE 'VALID'
    END AS quality_flag,
    CAST(CURRENT_TIMESTAMP() AS TIMESTAMP_NTZ) AS processed_at,
    'machine_logs/v1' AS rules_version
FROM latest
WHERE version_rank = 1
