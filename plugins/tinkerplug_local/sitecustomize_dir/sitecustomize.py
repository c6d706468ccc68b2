"""Put first on ``PYTHONPATH`` by ``tinkerplug local``: every Python started under it routes
``tinker.ServiceClient`` to tinkerplug's local backend as soon as it imports ``tinker``.

The ``sitecustomize`` this one shadows (if any) runs first, so existing site set-up is kept.
Nothing heavy is imported here: the patch happens on ``import tinker``.
"""

import os
import sys


def _run_shadowed_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


def _install() -> None:
    try:
        from tinkerplug_local.patching import install_import_hook
    except ImportError as exc:
        message = (
            f"tinkerplug local: this Python ({sys.executable}) cannot import the local backend "
            f"({exc}); run the script with the Python of the environment where tinkerplug is installed\n"
        )
        sys.stderr.write(message)
        sys.stderr.flush()
        # The process `tinkerplug local` started must not fall through to the real service;
        # other Pythons the script happens to start are left alone.
        if os.environ.get("TINKERPLUG_LOCAL_PID") == str(os.getpid()):
            os._exit(2)
        return
    install_import_hook()


_run_shadowed_sitecustomize()
_install()
