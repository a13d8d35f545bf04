-- silver.quality_checks: trimmed, upper-cased ids, lower-cased results, one row per check id.
WITH normalized AS (
    SELECT
        UPPER(TRIM(CAST(check_id AS STRING))) AS check_id,
        UPPER(TRIM(CAST(work_order_id AS STRING))) AS work_order_id,
        UPPER(TRIM(CAST(inspector_id AS STRING))) AS inspector_id,
        LOWER(TRIM(CAST(result AS STRING))) AS result,
        CAST(defects_found AS INT) AS defects_found,
        CAST(check_time AS TIMESTAMP_NTZ) AS check_time,
        CAST(updated_at AS TIMESTAMP_NTZ) AS updated_at,
        _asgard_loaded_at
    FROM bronze.quality_checks
),

latest AS (
    SELECT
        *,
        ROW_NUMBER() OVER (
            PARTITION BY check_id ORDER BY updated_at DESC, _asgard_loaded_at DESC
        ) AS version_rank
    FROM normalized
    WHERE check_id IS NOT NULL AND check_id <> ''
)

SELECT
    check_id,
    work_order_id,
    inspector_id,
    result,
    defects_found,
    check_time,
    updated_at,
    CASE
        WHEN result NOT IN ('pass', 'fail') THEN 'INVALID'
        WHEN defects_found < 0 THEN 'INVALID'
        ELSE 'VALID'
    END AS quality_flag,
    CAST(CURRENT_TIMESTAMP() AS TIMESTAMP_NTZ) AS processed_at,
    'quality_checks/v1' AS rules_version
FROM latest
WHERE version_rank = 1
