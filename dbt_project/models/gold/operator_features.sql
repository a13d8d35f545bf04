-- gold.operator_features: one row per operator with at least 5 VALID work orders.
-- Cross-database macros keep this one text valid on DuckDB and Trino.
with orders as (
    select
        operator_id,
        product_id,
        status,
        quantity,
        cast(duration_hours as decimal(38, 12)) as hours,
        updated_at,
        case when quality_flag = 'VALID' then 1 else 0 end as is_valid,
        case when quality_flag = 'VALID' and status = 'completed' then 1 else 0 end as is_valid_completed
    from {{ source('silver', 'work_orders') }}
    where operator_id <> 'UNASSIGNED'
),

per_operator as (
    select
        operator_id,
        cast(sum(is_valid) as {{ dbt.type_bigint() }}) as total_work_orders,
        cast(sum(is_valid_completed) as {{ dbt.type_bigint() }}) as completed_orders,
        cast(sum(case when is_valid_completed = 1 then quantity end) as {{ dbt.type_bigint() }}) as total_units,
        -- summed as decimals: exact, so the same rows give the same gold in any order the
        -- engine adds them (a float sum's last digits move with its threads)
        cast(sum(case when is_valid_completed = 1 then hours end) as {{ type_double() }}) as total_hours,
        cast(avg(case when is_valid_completed = 1 then hours end) as {{ type_double() }}) as avg_duration_hours,
        cast(count(distinct case when is_valid = 1 then product_id end) as {{ dbt.type_bigint() }}) as products_handled,
        cast(sum(is_valid) as {{ type_double() }}) / count(*) as data_quality_score,
        max(updated_at) as feature_timestamp
    from orders
    group by operator_id
),

rates as (
    select
        *,
        case when total_hours = 0 then null else total_units / total_hours end as units_per_hour,
        cast(completed_orders as {{ type_double() }}) / total_work_orders as completion_rate
    from per_operator
    where total_work_orders >= 5
)

select
    operator_id,
    total_work_orders,
    completed_orders,
    total_units,
    total_hours,
    avg_duration_hours,
    units_per_hour,
    completion_rate,
    products_handled,
    data_quality_score,
    cast(case when units_per_hour > 75 and completion_rate > 0.9 then 1 else 0 end as {{ dbt.type_int() }}) as is_high_performer,
    feature_timestamp
from rates
