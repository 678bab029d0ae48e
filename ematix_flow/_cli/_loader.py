"""Import the user's pipelines module for ``--module`` (``EMATIX_FLOW_MODULE``).

Every command that works on pipelines calls :func:`load_module` first. ``--module`` is
an import name (``my_pipelines``, ``etl.pipelines``), imported the way
``python -c "import my_pipelines"`` would from the working directory, or the path of a
file (``my_pipelines.py``, ``./my_pipelines.py``, ``etl/pipelines.py``), imported under
the name Python would give it: its folder, or the first folder above it that is not a
package (has no ``__init__.py``), goes first on ``sys.path``, as pytest does for test
files.

When the import fails, the error says what a person needs to fix it, as a
:class:`ConfigurationError` (exit code CONFIG_ERROR):

- the module itself is not found → where flow looked and how to make it importable;
- a package the module imports is not installed → its name and where to install it;
- anything else (``SyntaxError``, ``NameError``, a ``DefinitionError`` …) → the error
  at the file and line of the user's code that raised it.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from ematix_flow._errors import ConfigurationError, EmatixFlowError

__all__ = ["load_module", "resolve_module"]


def load_module(spec: str) -> str:
    """Import the module ``spec`` names (an import name or a file path) and return its
    import name; failures raise :class:`ConfigurationError` (see the module docstring)."""
    name, folder = resolve_module(spec)
    cwd = Path.cwd()
    if folder == cwd:
        if str(cwd) not in sys.path and "" not in sys.path[:1]:
            sys.path.insert(0, str(cwd))
    elif str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise ConfigurationError(_not_found(name, folder)) from exc
        raise ConfigurationError(
            f"cannot import module {name!r}: {_where(exc)}module {name!r} imports "
            f"{exc.name!r}, which is not installed; install it in the environment flow "
            f"runs in ({sys.prefix})"
        ) from exc
    except SyntaxError as exc:
        where = _location(exc.filename, exc.lineno)
        raise ConfigurationError(
            f"cannot import module {name!r}: {where}SyntaxError: {exc.msg}"
        ) from exc
    except EmatixFlowError as exc:
        raise ConfigurationError(f"cannot import module {name!r}: {_where(exc)}{exc}") from exc
    except Exception as exc:
        raise ConfigurationError(
            f"cannot import module {name!r}: {_where(exc)}{type(exc).__name__}: {exc}"
        ) from exc
    if _looks_like_path(spec):
        _check_is_file(module, name, spec)
    return name


def resolve_module(spec: str) -> tuple[str, Path]:
    """The import name ``--module spec`` stands for and the folder it is imported from.

    >>> resolve_module("my_pipelines")  # doctest: +SKIP
    ('my_pipelines', PosixPath('/home/me/project'))
    >>> resolve_module("etl/pipelines.py")  # etl/ has an __init__.py  # doctest: +SKIP
    ('etl.pipelines', PosixPath('/home/me/project'))
    """
    cwd = Path.cwd()
    if not _looks_like_path(spec):
        bad = [p for p in spec.split(".") if not p.isidentifier()]
        if bad:
            raise ConfigurationError(
                f"--module {spec!r} is not a Python module name ({bad[0]!r}: letters, digits "
                "and _ only, not starting with a digit); give the import name of the module "
                "(--module my_pipelines) or the path of its file (--module my_pipelines.py)"
            )
        return spec, cwd
    path = cwd / spec
    if path.is_dir():
        if not (path / "__init__.py").is_file():
            raise ConfigurationError(
                f"--module {spec!r}: {path} is a folder, not a package (no __init__.py); "
                "give the file that registers the pipelines, e.g. --module "
                f"{Path(spec) / 'pipelines.py'}"
            )
        parts, folder = [path.name], path.parent
    elif path.suffix == ".py" and path.is_file():
        parts, folder = [path.stem], path.parent
    else:
        raise ConfigurationError(
            f"--module {spec!r}: there is no file {path}; give the path of the Python file "
            "that registers the pipelines, or its import name (--module my_pipelines) from "
            "the folder holding it"
        )
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    for part in parts:
        if not part.isidentifier():
            raise ConfigurationError(
                f"--module {spec!r}: {part!r} is not a Python module name (letters, digits "
                "and _ only, not starting with a digit), so it cannot be imported; rename it, "
                f"e.g. to {_identifier(part)!r}"
            )
    return ".".join(parts), folder


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def _identifier(text: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in text)
    return f"_{out}" if out[:1].isdigit() else out


def _not_found(name: str, folder: Path) -> str:
    file = Path(*name.split(".")).with_suffix(".py")
    return (
        f"cannot import module {name!r}: no module named {name!r} (looked in {folder} and on "
        f"sys.path). Run flow from the folder holding {file}, give the path of the file "
        f"(--module path/to/{file.name}), or make the module importable."
    )


def _check_is_file(module: object, name: str, spec: str) -> None:
    """A file whose name is taken (``json.py``, ``test.py`` …): Python gives the module
    already imported under that name, not the file, and no pipeline would register."""
    expected = (Path.cwd() / spec).resolve()
    if expected.is_dir():
        expected = expected / "__init__.py"
    found = getattr(module, "__file__", None)
    if found is None or Path(found).resolve() != expected:
        raise ConfigurationError(
            f"--module {spec!r}: the import name {name!r} is taken by "
            f"{found or 'a built-in module'}, so {expected} is not imported; rename the file"
        )


def _where(exc: BaseException) -> str:
    """``"file.py:12: "`` for the innermost traceback frame in the user's code."""
    import sysconfig
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    ours = str(Path(__file__).resolve().parents[1]) + os.sep
    libraries = {
        str(Path(p).resolve()) + os.sep
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (p := sysconfig.get_paths().get(key))
    }

    def user(filename: str, *, strict: bool) -> bool:
        if filename.startswith("<"):
            return False
        resolved = str(Path(filename).resolve())
        if resolved.startswith(ours):
            return False
        return not (strict and any(resolved.startswith(lib) for lib in libraries))

    for strict in (True, False):
        for frame in reversed(frames):
            if user(frame.filename, strict=strict):
                return _location(frame.filename, frame.lineno)
    return ""


def _location(filename: str | None, lineno: int | None) -> str:
    if not filename:
        return ""
    path = Path(filename)
    try:
        shown = str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        shown = str(path)
    return f"{shown}:{lineno}: " if lineno else f"{shown}: "
