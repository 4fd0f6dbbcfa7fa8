"""``scgf perturb``: in silico perturbation of the cells of an ``.h5ad``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import _keys
from ._files import check_input, check_output_folder, write_adata
from ._options import add_input_output, add_model_arguments, positive_int

PERTURB_TYPES = ["delete", "overexpress", "inhibit", "activate"]


def add_parser(sub) -> None:
    """Register ``perturb``."""
    per = sub.add_parser("perturb", help="in silico perturbation of the cells of an .h5ad")
    add_input_output(per, what="raw counts or tokens", output="output .h5ad with the results")
    per.add_argument("--genes", default="all", help="'all' or a comma-separated group")
    per.add_argument("--group", action="append", help="NAME=GENE1,GENE2 (repeatable)")
    per.add_argument("--perturb-type", default="delete", choices=PERTURB_TYPES)
    per.add_argument("--state-key", help="obs column of cell states")
    # Not --start/--goal: torchrun would read an abbreviated --start as its --start-method.
    per.add_argument("--start-state", help="start state (the cells perturbed)")
    per.add_argument("--goal-state", help="goal state")
    per.add_argument("--alt-state", action="append", help="alternative state (repeatable)")
    per.add_argument("--anchor-gene")
    per.add_argument("--combos", action="store_true")
    per.add_argument("--gene-shifts", action="store_true")
    per.add_argument("--max-cells", type=positive_int)
    per.add_argument("--resume", help="folder for checkpoints; rerun to continue")
    add_model_arguments(per, key_added=_keys.PERTURB, dtype_help="default: float32")
    per.set_defaults(func=run)


def gene_argument(args: argparse.Namespace) -> str | list[str] | dict[str, list[str]]:
    """``genes=`` of ``tl.perturb`` from ``--genes``/``--group``."""
    if args.group:
        genes = {}
        for spec in args.group:
            name, _, members = spec.partition("=")
            genes[name] = members.split(",")
        return genes
    return "all" if args.genes == "all" else args.genes.split(",")


def state_argument(args: argparse.Namespace) -> dict | None:
    """``cell_states=`` of ``tl.perturb`` from the state options."""
    if not args.state_key:
        if args.start_state or args.goal_state or args.alt_state:
            raise ValueError("--start-state/--goal-state/--alt-state need --state-key.")
        return None
    missing = [
        o
        for o, v in (("--start-state", args.start_state), ("--goal-state", args.goal_state))
        if not v
    ]
    if missing:
        raise ValueError(f"--state-key {args.state_key} needs {' and '.join(missing)}.")
    states = {"key": args.state_key, "start": args.start_state, "goal": args.goal_state}
    if args.alt_state:
        states["alt"] = args.alt_state
    return states


def run(args: argparse.Namespace) -> None:
    """Perturb the cells of ``args.input``; write the results to ``args.output``."""
    import anndata as ad

    from .._engine._distributed import world

    rank, _ = world()
    source, target = check_input(args.input), Path(args.output)
    check_output_folder(target)  # before the run, not after it
    cell_states = state_argument(args)
    adata = ad.read_h5ad(source)
    try:
        _perturb_cells(adata, args, cell_states)
    except KeyboardInterrupt as err:
        if args.resume:
            err.add_note(
                f"finished cells are saved in {args.resume}: run the same command again to continue"
            )
        raise
    if rank == 0:
        write_adata(adata, target)
        print(f"results written to {target} (uns[{args.key_added!r}])")


def _perturb_cells(adata, args: argparse.Namespace, cell_states: dict | None) -> None:
    from ..tl import perturb
    from ._options import model_options

    perturb(
        adata,
        gene_argument(args),
        perturb_type=args.perturb_type,
        cell_states=cell_states,
        anchor_gene=args.anchor_gene,
        combos=args.combos,
        gene_shifts=args.gene_shifts,
        max_cells=args.max_cells,
        resume=args.resume,
        **model_options(args),
    )
