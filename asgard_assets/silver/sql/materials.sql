-- silver.materials: trimmed ids and names, lower-cased categories and units, one row per material.
WITH normalized AS (
    SELECT
        UPPER(TRIM(CAST(material_id AS STRING))) AS material_id,
        TRIM(CAST(material_name AS STRING)) AS material_name,
        LOWER(TRIM(CAST(category AS STRING))) AS category,
        LOWER(TRIM(CAST(unit AS STRING))) AS unit,
        CAST(quantity_on_hand AS INT) AS quantity_on_hand,
        CAST(unit_cost AS DOUBLE) AS unit_cost,
        TRIM(CAST(supplier AS STRING)) AS supplier,
        CAST(updated_at AS TIMESTAMP_NTZ) AS updated_at,
        _asgard_loaded_at
    FROM bronze.materials
),

latest AS (
    SELECT
        *,
        ROW_NUMBER() OVER (
            PARTITION BY material_id ORDER BY updated_at DESC, _asgard_loaded_at DESC
        ) AS version_rank
    FROM normalized
    WHERE material_id IS NOT NULL AND material_id <> ''
)

SELECT
    material_id,
    material_name,
    category,
    unit,
    CASE WHEN quantity_on_hand >= 0 THEN quantity_on_hand ELSE 0 END AS quantity_on_hand,
    unit_cost,
    supplier,
    updated_at,
    CASE
        WHEN quantity_on_hand IS NULL OR quantity_on_hand < 0 THEN 'INVALID'
        WHEN unit_cost IS NULL OR unit_cost <= 0 THEN 'INVALID'
        ELSE 'VALID'
    END AS quality_flag,
    CAST(CURRENT_TIMESTAMP() AS TIMESTAMP_NTZ) AS processed_at,
    'materials/v1' AS rules_version
FROM latest
WHERE version_rank = 1
