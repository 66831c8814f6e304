"""``extract run --model`` and ``--model-option`` as the command line reads them, and ``extract models``.

Names resolve through the one model registry (:func:`extract.models.get_model_spec`): built-in
models, ``python:MODULE:FUNCTION`` factories and installed plugins.
"""

from __future__ import annotations

import click

from schemas.cli import StrictCommand


def check_model(ctx, param, value):
    """``--model`` names a model the registry resolves (checked as the option is parsed)."""
    from extract.models import get_model_spec

    if value is not None:
        try:
            get_model_spec(value)
        except KeyError as exc:
            raise click.BadParameter(exc.args[0]) from None
    return value


def parse_model_options(pairs) -> dict[str, str]:
    """``("KEY=VALUE", ...)`` of ``--model-option`` -> ``{KEY: VALUE}`` (a usage error otherwise)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--model-option")
        out[key.strip()] = value.strip()
    return out


@click.command("models", cls=StrictCommand)
def models_command():
    """List the models `extract run --model` takes by name, with where each comes from: the built-in
    ones and the installed plugins (entry-point group anomaly_seg_cache.models); any pixel model
    also runs as python:MODULE:FUNCTION.

    \b
    Example:
      extract models
    """
    from extract.models import list_models

    for name, source, description in list_models():
        click.echo(f"{name:<16} {source:<28} {description}")
    click.echo(f"{'python:M:F':<16} {'a factory':<28} any pixel model: FUNCTION(checkpoint) -> (module, declaration)")
