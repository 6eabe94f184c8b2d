"""`mnist-tf serve`: `serve.server.serve`, with a warning when it listens beyond loopback."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from mnist_tf.cli.common import main, start_tensorflow, user_errors
from mnist_tf.core.errors import UserError


@main.command(name="serve")
@click.option(
    "--model",
    "model_base",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of numbered SavedModel versions, e.g. export/saved_model/mnist; the newest serves, as model mnist.",
)
@click.option(
    "--model_config_file",
    "--model-config-file",
    "model_config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TF Serving's model config (text format): several models, version policies and labels. "
    "Instead of --model; a relative base_path is read from the file's folder.",
)
@click.option(
    "--model_config_file_poll_wait_seconds",
    "--model-config-file-poll-wait-seconds",
    "config_poll_seconds",
    type=click.FloatRange(0),
    default=1.0,
    help="How often to read --model_config_file again for models added, removed or relabelled (0: never).",
)
@click.option("--host", default="127.0.0.1", help="Address to listen on; anything but loopback is reachable by others.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8501, help="Port (TF Serving's REST port; 0: any free one)."
)
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    default=8500,
    help="Port of TF Serving's gRPC API, on the same --host (0: any free one).",
)
@click.option("--no-grpc", is_flag=True, help="Serve the REST API only, with no gRPC port.")
@click.option(
    "--max-body-bytes",
    type=click.IntRange(1),
    default=16 * 1024 * 1024,
    help="Largest request body (REST) or message (gRPC).",
)
@click.option("--max-instances", type=click.IntRange(1), default=256, help="Most instances (images) per request.")
@click.option(
    "--max-image-pixels", type=click.IntRange(1), default=16_000_000, help="Largest encoded image, in pixels."
)
@click.option(
    "--poll-seconds", type=click.FloatRange(0), default=1.0, help="How often to look for a newer version (0: never)."
)
@click.option("--threads", type=click.IntRange(1, 64), default=2, help="Model calls that run at once.")
@click.option(
    "--max-batch-size",
    type=click.IntRange(1),
    default=32,
    help="Most instances merged into one model call from requests that queue while the model is busy (1: no batching).",
)
@user_errors
def serve_command(
    model_base: Path | None,
    model_config_file: Path | None,
    config_poll_seconds: float,
    host: str,
    port: int,
    grpc_port: int,
    no_grpc: bool,
    max_body_bytes: int,
    max_instances: int,
    max_image_pixels: int,
    poll_seconds: float,
    threads: int,
    max_batch_size: int,
) -> None:
    """Serve models with TF Serving's REST and gRPC APIs and a draw-a-digit page.

    A development server: run TF Serving in production; the same clients work against both.
    """
    if (model_base is None) == (model_config_file is None):
        raise UserError("pass either --model FOLDER (one model) or --model_config_file FILE (several models)")
    if no_grpc and click.get_current_context().get_parameter_source("grpc_port") != ParameterSource.DEFAULT:
        raise UserError("--grpc-port and --no-grpc contradict each other: pass one of them")

    start_tensorflow()
    from mnist_tf.serve.limits import Limits
    from mnist_tf.serve.model_config import read_model_config, single_model
    from mnist_tf.serve.server import is_loopback, serve

    if not is_loopback(host):
        click.echo(
            f"warning: listening on {host}: other machines can reach this server; it has no authentication", err=True
        )

    models = read_model_config(model_config_file) if model_config_file else single_model(model_base)

    def ready(url: str, grpc_address: str | None, served: dict[str, list[int]]) -> None:
        grpc = f", gRPC at {grpc_address}" if grpc_address else ""
        if model_config_file is None:
            [(name, versions)] = served.items()
            what, where = f"{model_base} version {versions[-1]}", f"{url}/v1/models/{name}"
        else:
            listed = ", ".join(f"{name} ({' '.join(map(str, v))})" for name, v in served.items())
            what, where = f"{model_config_file}: {listed}", f"{url}/v1/models/"
        click.echo(f"serving {what} at {where}{grpc}, page at {url}/ (Ctrl-C stops)")

    limits = Limits(max_body_bytes, max_instances, max_image_pixels)
    grpc_port_or_none = None if no_grpc else grpc_port
    config_poll = config_poll_seconds if model_config_file else 0.0
    serve(
        models,
        host,
        port,
        limits,
        poll_seconds,
        threads,
        max_batch_size,
        ready,
        grpc_port_or_none,
        model_config_file,
        config_poll,
    )
    click.echo("stopped")
