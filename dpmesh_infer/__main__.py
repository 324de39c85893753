"""``python -m dpmesh_infer``: the ``dpmesh`` command line."""

from .cli import main

if __name__ == "__main__":
    main()
