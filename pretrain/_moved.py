"""Old module names of what moved to `downstream`, kept for one release.

`import pretrain.generation` still works: it warns, then the name refers to the new module.
These stubs are the only imports from `pretrain` up into `downstream`; the layering test knows them.
"""

import importlib
import sys
import types
import warnings


def alias(old: str, *new: str):
    """Makes module `old` the module `new[0]` (or, for several, a module holding all their names)."""
    warnings.warn("%s moved to %s; import it from there (the old name goes in the next release)."
                  % (old, " and ".join(new)), DeprecationWarning, stacklevel=3)
    modules = [importlib.import_module(name) for name in new]
    if len(modules) == 1:
        sys.modules[old] = modules[0]
        return
    merged = types.ModuleType(old, sys.modules[old].__doc__)
    for module in reversed(modules):
        merged.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    sys.modules[old] = merged
