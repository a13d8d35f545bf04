{# A 64-bit float on every adapter, in dbt's cross-database dispatch style
   (dbt.type_float() is 32-bit `float` on DuckDB). #}
{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double', 'asgard')()) }}
{%- endmacro %}

{% macro default__type_double() -%}double{%- endmacro %}
