"""``python -m dpmesh_infer.cli`` (also what ``accelerate launch -m dpmesh_infer.cli`` runs)."""

from . import main

if __name__ == "__main__":
    main()
