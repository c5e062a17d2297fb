"""What a notebook may import beyond the kernel's own packages, and what to say when it cannot.

A notebook declares extra packages in a `requirements.txt` committed beside it; the worker
installs them per pipeline (worker/requirements_install.py). This module is the part the
whole platform shares: reading that file, telling an import name from the package that
provides it (`sklearn` comes from `scikit-learn`), and turning an ImportError into the one
line a data scientist needs ("add `seaborn` to requirements.txt beside the notebook").

requirements.txt here holds package names with versions and nothing else. pip's options
(`--index-url`, `-e`, `-r`), direct URLs and local paths are refused: the packages come from
the platform's index, the file cannot point pip at another server or at a source tree to build.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

REQUIREMENTS_FILE = "requirements.txt"
# The variable naming the folders the pipeline's requirements were installed into: the kernel
# (mlops_core/kernel_startup.py) and the model-logging child append them to sys.path.
REQUIREMENTS_PATH_VARIABLE = "MLOPS_REQUIREMENTS_PATH"
# Longer than any real requirements file; the worker reads no more than this.
MAX_REQUIREMENTS_BYTES = 64 * 1024
HOW_TO_DECLARE = f"add `{{package}}` to {REQUIREMENTS_FILE} beside the notebook"

# Import names whose package (the name pip installs) is spelled differently. Names not listed
# are their own package name (`import xgboost` → `xgboost`), which holds for most packages.
IMPORT_TO_DISTRIBUTION: dict[str, str] = {
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "skopt": "scikit-optimize",
    "imblearn": "imbalanced-learn",
    # The headless build: the GUI one needs libGL, which a server has no reason to have.
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil",
    "dotenv": "python-dotenv",
    "docx": "python-docx",
    "pptx": "python-pptx",
    "fitz": "pymupdf",
    "Crypto": "pycryptodome",
    "OpenSSL": "pyopenssl",
    "jwt": "pyjwt",
    "zmq": "pyzmq",
    "git": "gitpython",
    "attr": "attrs",
    "google.protobuf": "protobuf",
    "umap": "umap-learn",
    "Levenshtein": "levenshtein",
    "Bio": "biopython",
    "mpl_toolkits": "matplotlib",
    "faiss": "faiss-cpu",
    "psycopg2": "psycopg2-binary",
    "MySQLdb": "mysqlclient",
    "serial": "pyserial",
    "magic": "python-magic",
    "slugify": "python-slugify",
}

_MISSING_MODULE = re.compile(r"^(?:ModuleNotFoundError|ImportError): No module named '([^']+)'")
_MISSING_NAME = re.compile(
    r"^ImportError: cannot import name '([^']+)' from '([^']+)'(?: \(([^)]*)\))?"
)
# A line of a cell that installs packages itself: `%pip install x`, `!pip3 install -q x`,
# `!python -m pip install x`, `%conda install x`, `!uv pip install x`.
_INSTALL_LINE = re.compile(
    r"^\s*(?:%{1,2}|!)\s*(?:(?:\S*python3?(?:\.\d+)?)\s+-m\s+)?"
    r"(?:pip3?|conda|mamba|micromamba|uv\s+pip)\s+install\b(?P<rest>.*)$"
)


class RequirementsError(ValueError):
    """requirements.txt cannot be used as it is; `problems` names each line at fault."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{REQUIREMENTS_FILE} beside the notebook: " + "; ".join(problems))


def distribution_for_import(module: str) -> str:
    """The package (distribution) name that provides an importable module, as pip spells it."""
    for name in (module, module.split(".")[0]):
        if name in IMPORT_TO_DISTRIBUTION:
            return IMPORT_TO_DISTRIBUTION[name]
    return module.split(".")[0].replace("_", "-").lower()


def installed_provider(package: str) -> tuple[str, str] | None:
    """(name, version) of the installed package that provides `package`, if any: the package
    itself, or one installing the same module under another name (the kernel's `xgboost-cpu`
    is what a requirement `xgboost` asks for: the same module, built without GPU support)."""
    try:
        return package, importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        pass
    module = canonicalize_name(package).replace("-", "_")
    for provider in importlib.metadata.packages_distributions().get(module, []):
        try:
            return provider, importlib.metadata.version(provider)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def parse_requirements(text: str) -> list[Requirement]:
    """The requirements of a requirements.txt, or RequirementsError naming every bad line.

    Accepted: one requirement per line (`name`, `name==1.2`, `name[extra]>=1,<2`, with an
    environment marker), blank lines and `#` comments. Refused: pip options, direct URLs,
    local paths and files, and line continuations (none is needed for a package list).
    """
    requirements: list[Requirement] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        problem = _line_problem(line)
        if problem is None:
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            if name in seen:
                problem = f"`{requirement.name}` is listed twice (lines {seen[name]} and {number})"
            else:
                seen[name] = number
                requirements.append(requirement)
        if problem is not None:
            problems.append(f"line {number}: {problem}")
    if problems:
        raise RequirementsError(problems)
    return requirements


def _line_problem(line: str) -> str | None:
    """Why one non-empty line is not accepted, or None when it is a plain requirement."""
    if line.startswith("-"):
        option = line.split()[0]
        return (
            f"`{option}`: pip options are not accepted here, only package names with versions "
            "(e.g. `xgboost==2.1.1`); packages come from the platform's package index"
        )
    if line.endswith("\\"):
        return "line continuations are not accepted: one requirement per line"
    try:
        requirement = Requirement(line)
    except InvalidRequirement:
        return (
            f"`{line}` is not a package requirement (a name with an optional version, "
            "e.g. `seaborn>=0.13`); local paths, files and URLs are not accepted"
        )
    if requirement.url:
        return f"`{line}`: direct references (`name @ url`) are not accepted, only package names"
    return None


def installs_in_cell(source: str) -> list[str]:
    """The lines of a cell that install packages with a shell or magic command (`%pip install`)."""
    return [line.strip() for line in source.splitlines() if _INSTALL_LINE.match(line)]


def import_error_hint(message: str, installed: Callable[[str], str | None]) -> str | None:
    """What to do about an ImportError a cell raised, or None when it is not about a package.

    `message` is the error as `ename: evalue`; `installed(package)` gives the version of a
    package the kernel has (None when it has not). Either the package is missing (say how to
    declare it), or it is there but lacks the module or name the notebook imports (the
    notebook was written for another version: say which one the kernel has).
    """
    missing = _MISSING_MODULE.match(message)
    if missing is not None:
        module = missing.group(1)
        top = module.split(".")[0]
        package = distribution_for_import(module)
        version = installed(package)
        if version is not None:
            return _other_version(package, version, f"no module `{module}`")
        spelled = f" (module `{top}` comes from the package `{package}`)" if package != top else ""
        return f"the kernel has no package `{package}`{spelled}: " + HOW_TO_DECLARE.format(
            package=package
        )
    missing_name = _MISSING_NAME.match(message)
    if missing_name is not None:
        name, module = missing_name.group(1), missing_name.group(2)
        package = distribution_for_import(module)
        version = installed(package)
        if version is not None:
            return _other_version(package, version, f"no `{name}` in `{module}`")
    return None


def _other_version(package: str, version: str, lacking: str) -> str:
    return (
        f"the kernel's {package} {version} has {lacking}: the notebook was written for another "
        f"version of {package}, where the name exists; change the code for {package} {version} "
        f"(a package the kernel ships cannot be replaced; one from {REQUIREMENTS_FILE} can be "
        "pinned there)"
    )
