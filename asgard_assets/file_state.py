"""Files by path, size and modification time: what tells that code or a project changed
without reading it (the dbt parse's inputs, a warm run process's definitions)."""

from pathlib import Path


def files_state(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, list[int]]:
    """Every file under ``root`` but those under ``skip`` and hidden ones (dbt's
    `.user.yml`) and bytecode: {relative path: [size, mtime_ns]}. A file added, removed,
    renamed or written changes it."""
    skipped = {p.resolve() for p in skip}
    return {
        str(p.relative_to(root)): [p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix != ".pyc"
        and not any(d in skipped for d in p.resolve().parents)
    }
