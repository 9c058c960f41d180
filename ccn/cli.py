"""What the ccn command lines share: the checks around an absl ``main``."""
from __future__ import annotations

import sys
from typing import Any, Callable, Mapping, Tuple, Type

from absl import app


def checked_call(prog: str, argv, required: Mapping[str, Any], call: Callable[[], Any],
                 errors: Tuple[Type[BaseException], ...]) -> Any:
    """Refuse positional arguments (``app.UsageError``) and empty required flags, run ``call``
    and turn the ``errors`` it may raise into ``prog: message`` on stderr and exit status 2 (a
    user's mistake, not a crash); returns what ``call`` returns."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    for name, value in required.items():
        if not value:
            print(f"{prog}: --{name} is required", file=sys.stderr)
            sys.exit(2)
    try:
        return call()
    except errors as e:
        print(f"{prog}: {e}", file=sys.stderr)
        sys.exit(2)
