"""A results page in ``docs/``: a study's report with one line saying which command, code version,
machine and date made it and how long the sweep took, and its plots beside it
(``python -m seqbench.report <study> --page docs/<study>.md``)."""

from __future__ import annotations

import platform
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd


def machine() -> str:
    """CPU model and core count (``/proc/cpuinfo``), else the platform's processor name."""
    import os

    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        model = found.group(1).strip() if found else ""
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def provenance(study: dict, runs: pd.DataFrame, tracker) -> str:
    """The page's one line: command, code version(s) of the runs, machine, date, the sweep's wall time."""
    versions = sorted(set(runs["tags.code_version"].dropna())) if "tags.code_version" in runs else []
    parent = tracker.client.get_run(tracker.study_run(study["name"]))
    start, end = parent.info.start_time, parent.info.end_time
    wall = f"{(end - start) / 60000:.0f} min" if start and end else "wall time unknown"
    date = datetime.fromtimestamp((end or start) / 1000, timezone.utc).strftime("%Y-%m-%d") if start else "?"
    name = study["name"]
    return (f"*Made by `make sweep STUDY={name} && make report STUDY={name}` · code version "
            f"{', '.join(versions) or '?'} · {machine()} · {date} · sweep wall time {wall}.*")


def write_page(page: Path, report_dir: Path, line: str) -> None:
    """``report.md`` with ``line`` under its title, its images copied to ``<page stem>/`` next to it."""
    text = (report_dir / "report.md").read_text()
    images = page.parent / page.stem
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    for png in report_dir.glob("*.png"):
        shutil.copy(png, images / png.name)
    text = re.sub(r"\]\(([^)/]+\.png)\)", lambda m: f"]({page.stem}/{m.group(1)})", text)
    title, _, rest = text.partition("\n")
    page.write_text(f"{title}\n\n{line}\n{rest}")
