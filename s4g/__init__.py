"""s4g: Sample4Geo cross-view geo-localisation with a Rust-accelerated sampler."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("s4g")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "git_commit"]


def git_commit() -> str:
    """The git commit this s4g comes from, abbreviated to 12 hex digits; "" when unknown.

    Imported from a git checkout: that checkout's HEAD. Installed from a wheel: the commit
    the compiled extension was built from (empty for a build from an sdist).
    """
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        try:
            done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):  # no git on PATH: fall back to the build's
            done = None
        if done is not None and done.returncode == 0:
            return done.stdout.strip()[:12]
    try:
        from s4g import _sampler
    except ImportError:
        return ""
    return getattr(_sampler, "GIT_COMMIT", "")
