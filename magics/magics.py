"""The magics themselves: parse options, call one runtime function, show the answer."""

from __future__ import annotations

import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from elsewhere.kernel.placement import POLICIES
from elsewhere.kernel.tasks import TaskOptions

from .arguments import parse, worker_ids
from .tables import task_table, worker_table

__all__ = ["ElsewhereMagics"]


@magics_class
class ElsewhereMagics(Magics):
    def __init__(self, shell: Any, host: Any) -> None:
        super().__init__(shell)
        self.host = host

    @magic_arguments()
    @argument("--placement", default="least-loaded", choices=POLICIES, help="how tasks pick a worker")
    @argument("--on", help="only these workers, e.g. --on 1,3")
    @argument("--io", default="host", choices=("host", "local"), help="whose files and processes tasks use")
    @argument("--show", action="store_true", help="show the placement widget in this cell")
    @line_cell_magic
    def distribute(self, line: str, cell: str | None = None) -> None:
        """Run this cell's coroutines (tasks, gather, to_thread) on worker kernels.

        Put ``%%distribute [options]`` on the first line of a cell. The cell itself runs
        here, as top-level async code; every coroutine it turns into a task, and every
        call it hands to the default executor, runs on a worker.
        """
        if cell is not None:
            msg = (
                "%%distribute was not rewritten before the cell ran (is the elsewhere.magics "
                "extension loaded?); run %load_ext elsewhere.magics and run the cell again"
            )
            raise UsageError(msg)
        args = parse(self.distribute, line)
        on = worker_ids(args.on) if args.on else None
        self.host.begin_cell(TaskOptions(placement=args.placement, on=on, io=args.io))
        if args.show:
            self._show_placement()

    @magic_arguments()
    @argument("action", nargs="?", choices=("add", "remove", "restart"), help="what to do")
    @argument("target", nargs="?", help="how many to add, or which worker")
    @argument("--wait", action="store_true", help="first wait until every starting worker is ready")
    @line_magic
    def workers(self, line: str) -> Any:
        """List the workers, or ``%workers add N`` / ``remove ID`` / ``restart ID``."""
        args = parse(self.workers, line)
        cluster = self.host.cluster
        if args.wait:
            cluster.wait_ready(len(cluster.workers()), timeout=cluster.startup_timeout)
        if args.action == "add":
            count = _positive(args.target or "1", "%workers add N")
            ids = cluster.add_workers(count)
            print(f"starting {', '.join(ids)}")
        elif args.action in ("remove", "restart"):
            if not args.target:
                raise UsageError(f"%workers {args.action} needs a worker id, like %workers {args.action} w1")
            (worker_id,) = _one_worker(args.target)
            try:
                (cluster.remove_worker if args.action == "remove" else cluster.restart_worker)(worker_id)
            except KeyError as exc:
                raise UsageError(exc.args[0]) from None
            if args.action == "restart":
                print(f"restarting {worker_id}")
        elif args.target:
            raise UsageError(f"%workers {args.target}: expected add N, remove ID or restart ID")
        return worker_table(cluster.workers())

    @magic_arguments()
    @argument("--all", action="store_true", help="include finished tasks of earlier cells")
    @argument("--journal", metavar="ID", help="show the journal of a task's host I/O")
    @argument("task", nargs="?", help="show one task in detail (its output and error)")
    @line_magic
    def tasks(self, line: str) -> Any:
        """List tasks (id, name, worker, state, elapsed), show one (``%tasks t12``), or
        its journal of host I/O (``%tasks --journal t12``)."""
        args = parse(self.tasks, line)
        cluster = self.host.cluster
        if args.journal:
            if cluster.io.journal.get(args.journal) is None and cluster.task(args.journal) is None:
                raise UsageError(f"there is no journal for task {args.journal!r}; %tasks --all lists the tasks")
            return Text(cluster.io.journal.render(args.journal))
        if args.task:
            record = cluster.task(args.task)
            if record is None:
                raise UsageError(f"there is no task {args.task!r}; %tasks --all lists them")
            return task_table([record], detail=True)
        records = cluster.tasks()
        if not args.all:
            cell = self.host._parent().get("msg_id")
            recent = time.time() - 3600
            records = [r for r in records if not r.done or r.cell == cell or (r.finished or 0) > recent][-200:]
        return task_table(records)

    @line_magic
    def placement(self, line: str) -> Any:
        """Show where every task runs, live."""
        if line.strip():
            raise UsageError(f"%placement takes no options (got {line.strip()!r})")
        return self._show_placement()

    def _show_placement(self) -> Any:
        from IPython.display import display

        try:
            from elsewhere.widgets import PlacementWidget
        except ImportError:
            view: Any = worker_table(self.host.cluster.workers())
        else:
            view = PlacementWidget(self.host.cluster)
        display(view)
        return None


class Text(str):
    """Shown as it is (a plain str would be shown with quotes)."""

    def __repr__(self) -> str:
        return str(self)


def _positive(text: str, usage: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"{usage}: N must be a positive whole number, got {text!r}")
    return int(text)


def _one_worker(text: str) -> tuple[str, ...]:
    ids = worker_ids(text)
    if len(ids) != 1:
        raise UsageError(f"give one worker id, got {text!r}")
    return ids
