{#- Where dbt-duckdb writes an external model's scratch file before the asgard_iceberg
    plugin commits it to Iceberg: under this home, resolved when the model runs. Overrides
    dbt-duckdb's macro, which puts it under the profile's external_root: a profile value
    naming the home would void dbt's parse state in every new home. -#}
{%- macro external_location(relation, config) -%}
  {{- env_var('ASGARD_HOME', '.asgard') }}/dbt/external/{{ relation.identifier }}.{{ config.get('format', 'parquet') }}
{%- endmacro -%}
