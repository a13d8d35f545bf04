-- silver.work_orders: the data contract's cleaning rules, in Spark SQL.
-- Text columns are cast to STRING before TRIM: a source may hold integer ids.
-- SparkOperator runs this text as-is; locally sqlglot transpiles it for DuckDB.
WITH normalized AS (
    SELECT
        UPPER(TRIM(CAST(work_order_id AS STRING))) AS work_order_id,
        UPPER(TRIM(CAST(product_id AS STRING))) AS product_id,
        UPPER(TRIM(CAST(machine_id AS STRING))) AS machine_id,
        NULLIF(UPPER(TRIM(CAST(operator_id AS STRING))), '') AS operator_id,
        LOWER(TRIM(CAST(status AS STRING))) AS status,
        quantity AS source_quantity,
        CAST(start_time AS TIMESTAMP_NTZ) AS start_time,
        CAST(end_time AS TIMESTAMP_NTZ) AS end_time,
        CAST(updated_at AS TIMESTAMP_NTZ) AS updated_at,
        _asgard_loaded_at
    FROM bronze.work_orders
),

latest AS (
    -- rule 2: one row per work order, the most recently updated one
    SELECT
        *,
        ROW_NUMBER() OVER (
            PARTITION BY work_order_id ORDER BY updated_at DESC, _asgard_loaded_at DESC
        ) AS version_rank
    FROM normalized
    WHERE work_order_id IS NOT NULL AND work_order_id <> ''
)

SELECT
    work_order_id,
    product_id,
    COALESCE(operator_id, 'UNASSIGNED') AS operator_id,
    machine_id,
    status,
    CAST(CASE WHEN source_quantity > 0 THEN source_quantity ELSE 0 END AS INT) AS quantity,
    start_time,
    end_time,
    CASE
        WHEN end_time IS NULL THEN NULL
        -- rule 5: exact to the microsecond (whole seconds were up to 1 s off)
        ELSE CAST(TIMESTAMPDIFF(MICROSECOND, start_time, end_time) AS DOUBLE) / 3600000000.0
    END AS duration_hours,
    CASE
        WHEN source_quantity IS NULL OR source_quantity <= 0 THEN 'INVALID'
        WHEN status = 'completed' AND end_time IS NULL THEN 'INVALID'
        WHEN end_time < start_time THEN 'INVALID'
        ELSE 'VALID'
    END AS quality_flag,
    updated_at,
    CAST(CURRENT_TIMESTAMP() AS TIMESTAMP_NTZ) AS processed_at,
    'work_orders/v2' AS rules_version
FROM latest
WHERE version_rank = 1
