"""Files by path, size and modification time: what tells that code or a project changed
without reading it (the dbt parse's inputs, a warm run process's definitions)."""

from pathlib import Path


def files_state(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, list[int]]:
    """Every file under ``root`` but those under ``skip`` and hidden ones (dbt's
    `.user.yml`) and bytecode: {relative path: [size, mtime_ns]}. A file added, removed,
    renamed or written changes it."""
    skipped = {p.resolve() for p in skip}
    state = {}
    for p in sorted(root.rglob("*")):
        if p.name.startswith(".") or p.suffix == ".pyc":
            continue
        try:
            if not p.is_file() or any(d in skipped for d in p.resolve().parents):
                continue
            stat = p.stat()
        except FileNotFoundError:  # an editor's or a tool's temporary file, gone since
            continue
        state[str(p.relative_to(root))] = [stat.st_size, stat.st_mtime_ns]
    return state
