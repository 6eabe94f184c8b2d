"""`mnist-tf serve` as a child process on free loopback ports: for the load benchmark and the tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class ServerProcess:
    """Starts `mnist-tf serve --model BASE --port 0 --grpc-port 0 OPTIONS...` and waits for its addresses:
    `url` (REST) and `grpc_address` (host:port; None with --no-grpc). BASE None: OPTIONS name the models
    (--model_config_file FILE).

    The server's stderr (access log included) goes to a temporary file, read with `log()`, removed by `stop()`.
    """

    def __init__(self, base: Path | None, *options: str, timeout: float = 120):
        model = ["--model", str(base)] if base is not None else []
        grpc = [] if "--no-grpc" in options or "--grpc-port" in options else ["--grpc-port", "0"]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
        self._stderr = tempfile.NamedTemporaryFile("w+", prefix="serve-", suffix=".log", delete=False)  # noqa: SIM115
        self.stderr_path = Path(self._stderr.name)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mnist_tf", "serve", *model, "--port", "0", *grpc, *options],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self.pid = self.process.pid
        self.stdout: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"serve exited with status {self.process.wait()}: {self.log()[-3000:]}")
            self.stdout.append(line)
            found = re.search(r"at (http://\S+?)/v1/models/", line)
            if found:
                self.url = found.group(1)
                grpc_found = re.search(r", gRPC at (\S+?),", line)
                self.grpc_address = grpc_found.group(1) if grpc_found else None
                return
        self.stop()
        raise RuntimeError(f"serve did not start within {timeout:.0f} s: {self.log()[-3000:]}")

    def log(self) -> str:
        """What the server wrote to stderr: its messages and the access log."""
        if self._stderr.closed:  # Stopped: the file is gone, its text kept.
            return self._log
        self._stderr.flush()
        return self.stderr_path.read_text()

    def peak_rss_mib(self) -> float | None:
        """The server's peak resident memory so far (VmHWM), in MiB; None where /proc has no such line."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(found.group(1)) / 1024 if found else None

    def cpu_seconds(self) -> float | None:
        """CPU time the server has used so far (user + system, all threads); None without /proc."""
        import os

        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signals the server, waits for it (kills it after `timeout` s) and returns its exit status; idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self.process.stdout.closed:  # The first stop: collect what is left.
            self.stdout += self.process.stdout.readlines()
            self.process.stdout.close()
            self._log = self.log()
            self._stderr.close()
            self.stderr_path.unlink(missing_ok=True)
        return self.process.returncode
