"""The `gatelab` command line. Commands that need torch import it lazily, so `grid` stays torch-free."""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import metadata

from gatelab.grid.cli.arguments import add_home
from gatelab.grid.cli.bench_command import add_bench_command
from gatelab.grid.cli.grid_commands import add_grid_commands
from gatelab.grid.cli.plan_command import add_plan_command
from gatelab.grid.cli.terminal import table
from gatelab.grid.cli.train_command import cmd_train
from gatelab.grid.spec.config_loader import ConfigError
from gatelab.grid.spec.examples import WHERE_NAMES_RESOLVE, add_init_command, shipped_examples
from gatelab.trainer.config.catalog import load_catalog
from gatelab.trainer.config.gate_spec import SpecError
from gatelab.trainer.config.model_cost import added_params, format_params
from gatelab.trainer.config.presets import PRESETS, preset


def cmd_variants(args: argparse.Namespace) -> int:
    base = preset(args.model)
    catalog = load_catalog(args.catalog)
    rows = []
    for variant in catalog.values():
        extra = added_params(base, variant, catalog)
        rows.append(
            {
                "name": variant.name,
                "paper_ref": variant.paper_ref,
                "extra_params": extra,
                "applicable": extra is not None,
                "paper_added_params_m": variant.paper.added_params_m,
                "paper_ppl": variant.paper.ppl,
                "axes": variant.axes,
                "description": variant.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    cells = []
    for row in rows:
        axes = " ".join(
            f"{k.removeprefix('gate_')}={v}"
            for k, v in row["axes"].items()
            if v not in ("none", "head_specific", "multiplicative", "hidden")
        )
        paper = f"{row['paper_added_params_m']}M" if row["paper_added_params_m"] is not None else ""
        cells.append((row["name"], row["paper_ref"][:40], format_params(row["extra_params"]), paper, axes))
    print(f"preset {args.model}; +params: ours at this preset; paper: the paper's added parameters (15A2B MoE)")
    print("\n".join(table(("name", "paper_ref", "+params", "paper", "axes"), cells, right=(2, 3))))
    return 0


class _OneLinePerCommand(argparse.HelpFormatter):
    """argparse sizes the name column without the extra indent of the command list, which pushes the longest
    command's help (stop-server) onto a line of its own; this counts that indent."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            longest = max(map(len, action.choices)) + self._current_indent + self._indent_increment
            self._action_max_length = max(self._action_max_length, longest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatelab",
        formatter_class=_OneLinePerCommand,
        description="Gated-attention ablation orchestrator (Qiu et al. 2025, Gated Attention for "
        "LLMs): grids of gate variants trained through Ray, recorded in MLflow.",
        epilog=f"GRID and CONFIG arguments: {WHERE_NAMES_RESOLVE}. Shipped: "
        f"{', '.join(p.stem for p in shipped_examples())}.",
    )
    parser.add_argument("--version", action="version", version=f"gatelab {metadata.version('gatelab')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    variants = commands.add_parser("variants", help="list the gate-variant catalog")
    variants.add_argument(
        "--model",
        default="paper-moe-15a2b",
        choices=sorted(PRESETS),
        help="preset whose extra parameters to show (default: the paper's Table 1 MoE)",
    )
    variants.add_argument("--json", action="store_true", help="print one JSON array")
    variants.add_argument(
        "--catalog",
        default=None,
        metavar="FILE",
        help="a catalog YAML of your own (default: the one shipped with gatelab)",
    )
    variants.set_defaults(func=cmd_variants)
    add_bench_command(commands)
    train = commands.add_parser("train", help="train one trial in-process; rerunning resumes it")
    train.add_argument("config", help=f"trial YAML (the schema of a grid's base): {WHERE_NAMES_RESOLVE}")
    train.add_argument("--set", action="append", metavar="dotted.key=value", help="override a field")
    add_home(train)
    train.set_defaults(func=cmd_train)
    add_grid_commands(commands)
    add_plan_command(commands)
    add_init_command(commands)
    from gatelab.grid.cli.report_command import add_report_command  # `gatelab report GRID`

    add_report_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, SpecError, ValueError) as err:
        # Bad input: one line, exit 2, nothing changed (ConfigError, DataError and SpecError are ValueErrors).
        print(f"gatelab: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader stopped reading (`gatelab status | head`): end quietly, as a Unix tool does. Point stdout
        # at /dev/null so that the interpreter's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command a pipe stopped
    except KeyboardInterrupt:
        print("gatelab: interrupted; rerun the same command to resume from the newest checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
