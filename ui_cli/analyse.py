"""``deejai analyse FILE...``: run the model on files and show what it hears.

Works on any file, scanned or not, in this process (no daemon, no library): per file the
duration, the five most probable tags, the first values of the track vector and the time
taken; ``--json`` prints one JSON document for machines. A file that cannot be analysed gets
one line on stderr and the others still run; the exit status is 1 when any failed.
"""
from __future__ import annotations

import sys

import click

__all__ = ["analyse"]


@click.command("analyse")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@click.option(
    "--patches",
    "-k",
    "patches",
    type=click.IntRange(min=0),
    default=None,
    help="Patches (~3 s each) spread over each track; 0 = every patch. "
    "Default: the engine's DEFAULT_PATCHES.",
)
@click.option("--model", "model_name", default=None, metavar="NAME|DIR",
              help="Model name or folder (default: the 'model' setting).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Interpreter threads.")
@click.option("--vectors", is_flag=True, help="With --json: include every patch's embedding.")
@click.pass_context
def analyse(
    ctx: click.Context,
    files: tuple[str, ...],
    as_json: bool,
    patches: int | None,
    model_name: str | None,
    threads: int,
    vectors: bool,
) -> None:
    """Analyse audio FILES with the model: duration, top tags, vector, time taken.

    \b
    Examples:
      deejai analyse song.mp3
      deejai analyse --patches 0 --json *.mp3 > analyses.json
    """
    from deejai.engine.analyse import DEFAULT_PATCHES, analyse as run_analysis
    from deejai.engine.analyse import analysis_to_json, top_tags
    from deejai.engine.config import load_settings
    from deejai.engine.errors import DeejaiError
    from deejai.engine.model import Model

    name = model_name or load_settings()["model"]
    model = Model(name, threads=threads)  # a ModelError ends the command with one line
    labels = list(model.card.tag_labels)
    k = DEFAULT_PATCHES if patches is None else patches

    out_console = None
    if not as_json:
        from rich.console import Console

        out_console = Console(highlight=False, soft_wrap=True)  # long tag lines are not cut

    from deejai.ui_cli.common import native_stderr_captured

    debug = bool((ctx.find_root().obj or {}).get("debug"))
    results: list[dict] = []
    failed = 0
    for path in files:
        try:
            with native_stderr_captured(show=debug):  # the decoders' own notes: --debug only
                a = run_analysis(path, model, k=k)
        except DeejaiError as exc:
            failed += 1
            click.echo(f"deejai: error: {exc}", err=True)
            results.append({"path": path, "ok": False, "error": str(exc)})
            continue
        if as_json:
            doc = analysis_to_json(a, labels, vectors=vectors)
            results.append({"ok": True, **doc})
        else:
            _show(out_console, a, top_tags(a, labels))
    model.close()

    if as_json:
        from deejai.ui_cli.common import echo_json

        echo_json({
            "model": model.card.name,
            "patches": k,
            "files": len(files),
            "failed": failed,
            "results": results,
        })
    if failed:
        sys.stdout.flush()
        ctx.exit(1)


def _show(console, a, tags: list[tuple[str, float]]) -> None:
    """Print one analysis for people."""
    from rich.markup import escape

    from deejai.ui_cli.common import format_duration

    t = a.timings_s
    console.print(f"[bold]{escape(a.path)}[/bold]")
    meta = " - ".join(a.tags[key] for key in ("artist", "title") if a.tags.get(key))
    if meta:
        console.print(f"  {escape(meta)}")
    console.print(
        f"  duration {format_duration(a.duration_s)} ({a.duration_s:.1f} s), "
        f"{len(a.patch_starts_s)} patches, model {escape(a.model)}"
    )
    console.print("  tags     " + ", ".join(f"{escape(tag)} {p:.2f}" for tag, p in tags))
    head = ", ".join(f"{v:+.3f}" for v in a.vector[:6])
    console.print(f"  vector   [{head}, ...] ({a.vector.shape[0]}-d)")
    stages = [("decode", t.get("decode", 0.0)), ("resample", t.get("resample", 0.0))]
    if t.get("mel"):  # a log-mel-input model; a PCM model computes its mel in the inference
        stages.append(("mel", t["mel"]))
    stages += [("inference", t.get("inference", 0.0)), ("tags+hash", t.get("hash", 0.0))]
    console.print(f"  time     {t['total']:.2f} s ("
                  + ", ".join(f"{name} {v:.2f}" for name, v in stages) + ")")
