"""Files as other processes see them: by path, size and modification time, what tells that
code or a project changed without reading it (the dbt parse's inputs, a warm run process's
definitions), and writes they never see half of."""

import os
from pathlib import Path


def write_whole(path: Path, content: str | bytes) -> None:
    """``content`` into ``path`` whole or not at all: written under a name of this process
    beside it, then renamed over it (other processes read it without a lock)."""
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    if isinstance(content, bytes):
        staged.write_bytes(content)
    else:
        staged.write_text(content)
    staged.replace(path)


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
