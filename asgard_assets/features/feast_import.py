"""Importing this module imports Feast, once per process, without typeguard instrumenting it.

Feast decorates its classes with typeguard's ``@typechecked``, which (typeguard 4) re-parses
and recompiles every decorated function's source when the module is imported: about 3 of
the 4 s that ``import feast`` takes here, paid by every process that uses Feast (each run's
feature step, the inference service, the tests). Upstream: agronholm/typeguard#468. The
checks only raise ``TypeCheckError`` on a wrongly typed argument to Feast's own API; Feast
never relies on them. So, only while Feast's modules load, ``typechecked`` leaves what it
decorates as it is. Feast modules imported later are instrumented as usual.
"""

import typeguard


def _unchecked(target=None, **_options):
    # both forms: @typechecked and @typechecked(...)
    return _unchecked if target is None else target


_typechecked = typeguard.typechecked
typeguard.typechecked = _unchecked
try:
    import feast  # noqa: F401
finally:
    typeguard.typechecked = _typechecked
