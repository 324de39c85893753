#!/usr/bin/env bash
# The one install command of dpmesh_infer:   bash install.sh
#
# Installs, into the Python given by $PYTHON (default: python3) — use a virtual environment if you like:
#   1. build tools: setuptools>=68,<81 (mmengine needs pkg_resources, gone in setuptools 81) and wheel;
#   2. torch — only if `import torch` fails. A torch that is already installed is never touched, so a
#      CUDA user installs the torch build for their machine first (https://pytorch.org), then runs this.
#      Without torch, "$TORCH_SPEC" is installed (default: torch==2.13.0; on a CPU-only machine with a
#      local CPU wheel in pip's find-links that wheel is picked up; from PyPI it is the CUDA build).
#      TORCH_SPEC is split into words, so it may carry pip options, e.g.
#        TORCH_SPEC="torch==2.5.1 --index-url https://download.pytorch.org/whl/cpu" bash install.sh
#   3. this package with its test, render and analysis extras: pip install -e ".[test,render,analysis]"
#      (editable; the render extra is pyrender, which pins PyOpenGL 3.1.0 -- kept: EGL works with it; the
#      analysis extra is matplotlib, for the pictures of `dpmesh occlusion-map`);
#   4. the Debian/Ubuntu OpenGL libraries for headless rendering with EGL and Mesa's software renderer
#      (libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri), apt-installed only when missing and only as root
#      (otherwise a warning with the command); skipped where there is no dpkg/apt-get;
#   5. the OpenMMLab stack for the keypoint detector, the way `pip install mmpose` cannot do it:
#      the runtime needs of mmengine/mmcv/mmdet/mmpose, then mmengine 0.10.7, mmcv-lite 2.1.0,
#      mmdet 3.3.0, mmpose 1.3.2 with --no-deps (their metadata asks for chumpy, torchvision and
#      opencv-python, none of which may be installed: chumpy does not build, torchvision breaks
#      `import peft` on a CPU torch, and opencv-python-headless already provides cv2), and xtcocotools
#      rebuilt from source against the installed numpy (needs a C compiler and Python headers);
#   demo. the web demo (`dpmesh demo`): the pyproject `demo` extra (gradio, and selenium for the demo's
#      browser test; gradio 6 needs pillow < 13, so pip may move pillow down -- torch/numpy stay pinned), and
#      Debian's chromium + chromium-driver for that test, apt-installed only when missing and only as root
#      (a warning otherwise: that one test then skips, saying why);
#   video: PyAV (video decoding/encoding, FFmpeg bundled in its wheel) and pygltflib (skinned, animated
#      glTF) -- the package's "video" extra -- when missing (install_video_stack);
#   ray: Ray Data (`dpmesh predict --engine ray`) -- the package's "ray" extra, ray[data] -- when missing
#      (install_ray_stack);
#   gltf validator: the Khronos glTF validator (npm gltf-validator) into $DPMESH_GLTF_VALIDATOR_DIR (default
#      ${XDG_CACHE_HOME:-~/.cache}/dpmesh/gltf-validator), used by the tests of every GLB the project writes
#      (scene.glb of photos and videos, --rig); Debian's nodejs and npm are apt-installed when missing and run
#      as root (install_gltf_validator);
#   6. a check that everything imports (mmpose through dpmesh_infer.detect.mmpose_compat), and a headless
#      render probe (a warning, not a failure: only `dpmesh predict --render` needs it).
# Between 4 and 5, install_gltf_validator: the Khronos glTF validator (npm gltf-validator, with Debian's
# nodejs/npm when missing and root) into ~/.cache/dpmesh/gltf-validator, for the scene.glb tests.
# Every pip call runs under constraints that keep the installed torch and numpy and setuptools<81.
# Idempotent: each step is skipped when what it installs is already present at the right version.
set -euo pipefail

PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

MM_PINS=(mmengine==0.10.7 mmcv-lite==2.1.0 mmdet==3.3.0 mmpose==1.3.2)
XTCOCO_PIN="xtcocotools==1.14.3"
# The pyproject `demo` extra (tests/test_demo.py checks that the two lists agree).
DEMO_REQS=("gradio>=6,<7" "selenium>=4.20")
DEMO_DEBS=(chromium chromium-driver)
# What mmengine / mmcv-lite / mmdet / mmpose import at run time (their declared requirements minus
# chumpy, torchvision, opencv-python), plus cython and numpy to build xtcocotools.
MM_RUNTIME=(addict yapf termcolor pyyaml packaging matplotlib json-tricks munkres pycocotools shapely
            terminaltables six tqdm scipy pillow rich cython numpy opencv-python-headless)

T0=$SECONDS
step() { printf '\n==> [%3ss] %s\n' "$((SECONDS - T0))" "$*"; }
ok()   { printf '    ok: %s\n' "$*"; }
die()  { printf '\nERROR: %s\n' "$*" >&2; exit 1; }

# Run Python outside the repository so a local *.egg-info never shadows the installed metadata.
py() { (cd / && "$PY" "$@"); }
# pip, without the noise of unreachable index mirrors in a machine's pip.conf (a warning per package).
pip_() {
  local rc=0
  py -m pip "$@" 2> >(grep -v -e 'is ignored: it is neither a file nor a directory' >&2) || rc=$?
  return $rc
}
export PIP_ROOT_USER_ACTION="${PIP_ROOT_USER_ACTION:-ignore}"  # said once below instead of per call

# Small Python helper (run outside the repo): `check missing REQ...` prints the requirements not satisfied
# by what is installed; `check package REPO` prints "current" when dpmesh-infer is installed editable
# from REPO at the pyproject's version with all its dependencies (and the test, render and analysis extras)
# satisfied.
CHECK_PY='
import json, sys
from importlib import metadata
from pathlib import Path
try:
    from packaging.requirements import Requirement
except ImportError:  # pip always vendors it
    from pip._vendor.packaging.requirements import Requirement

def unmet(specs):
    out = []
    for spec in specs:
        r = Requirement(spec)
        if r.marker is not None and not r.marker.evaluate({"extra": ""}):
            continue
        try:
            v = metadata.version(r.name)
        except metadata.PackageNotFoundError:
            out.append(spec)
            continue
        if r.specifier and not r.specifier.contains(v, prereleases=True):
            out.append(spec)
    return out

def package_current(repo):
    import tomllib  # Python >= 3.11; on 3.10 the editable install simply always runs
    repo = Path(repo).resolve()
    dist = metadata.distribution("dpmesh-infer")
    url = json.loads(dist.read_text("direct_url.json") or "{}")
    if not url.get("dir_info", {}).get("editable"):
        return False
    if Path(url["url"].removeprefix("file://")).resolve() != repo:
        return False
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    reqs = list(project.get("dependencies", [])) + [r for x in ("test", "render", "analysis") for r in extras.get(x, [])]
    return dist.version == project["version"] and not unmet(reqs)

mode, args = sys.argv[1], sys.argv[2:]
if mode == "missing":
    print("\n".join(unmet(args)))
else:
    try:
        print("current" if package_current(args[0]) else "stale")
    except Exception:
        print("stale")
'
check() { py -c "$CHECK_PY" "$@"; }
# `install_missing REQ...`: pip-installs (under the constraints) those of REQ... not satisfied yet.
install_missing() {
  local need
  need=$(check missing "$@")
  if [ -n "$need" ]; then
    echo "    installing: $(echo $need)"
    pip_ install -q -c "$CONSTRAINTS" $need
    ok "installed"
  else
    ok "$* present"
  fi
}

# ---------------------------------------------------------------------------------------------------
step "Python: $PY"
command -v "$PY" >/dev/null 2>&1 || [ -x "$PY" ] || die "Python interpreter '$PY' not found (set PYTHON=/path/to/python)."
py -c 'import sys; assert sys.version_info >= (3, 10), sys.version' \
  || die "Python >= 3.10 is required ($PY is $(py -c 'import sys; print(sys.version.split()[0])'))."
pip_ --version >/dev/null 2>&1 || die "pip is not available for $PY (try: $PY -m ensurepip --upgrade)."
ok "$(py -c 'import sys; print(sys.version.split()[0], sys.prefix)')"
if [ "$(id -u)" = 0 ] && [ "$(py -c 'import sys; print(sys.prefix == sys.base_prefix)')" = True ]; then
  echo "    note: installing as root into a Python that is not a virtual environment"
fi

CONSTRAINTS="$(mktemp -t dpmesh-constraints.XXXXXX)"
trap 'rm -f "$CONSTRAINTS"' EXIT
write_constraints() {
  # keep what is installed: torch and numpy at their installed versions; setuptools < 81 always
  py - >"$CONSTRAINTS" <<'EOF'
from importlib import metadata
print("setuptools>=68,<81")
for name in ("torch", "numpy"):
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
EOF
}
write_constraints

# ---------------------------------------------------------------------------------------------------
step "1/6 build tools (setuptools>=68,<81, wheel)"
need=$(check missing "setuptools>=68,<81" "wheel")
if [ -n "$need" ]; then
  pip_ install -q "setuptools>=68,<81" wheel
  ok "installed"
else
  ok "present"
fi

# ---------------------------------------------------------------------------------------------------
step "2/6 torch"
if torch_info="$(py -c 'import torch; print(torch.__version__, "(CUDA available)" if torch.cuda.is_available() else "(no CUDA)")' 2>/dev/null)"; then
  ok "keeping the installed torch $torch_info"
else
  echo "    installing: $TORCH_SPEC"
  # shellcheck disable=SC2086  # TORCH_SPEC is split on purpose (it may carry pip options)
  pip_ install -q -c "$CONSTRAINTS" $TORCH_SPEC
  torch_info="$(py -W ignore -c 'import torch; print(torch.__version__)' 2>/dev/null)" \
    || die "torch installed from '$TORCH_SPEC' does not import; install a torch for this machine (https://pytorch.org) and re-run."
  ok "torch $torch_info"
fi
write_constraints

# ---------------------------------------------------------------------------------------------------
step "3/6 dpmesh-infer (editable, with the test, render and analysis extras)"
if [ "$(check package "$REPO")" = "current" ]; then
  ok "installed (editable from $REPO), all requirements satisfied"
else
  pip_ install -q -c "$CONSTRAINTS" -e "$REPO[test,render,analysis]"
  ok "installed"
fi
write_constraints

# ---------------------------------------------------------------------------------------------------
step "4/6 OpenGL libraries for headless rendering (EGL, Mesa llvmpipe)"
GL_DEBS=(libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri)
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "    note: no dpkg/apt-get; for --render install EGL + Mesa (or OSMesa) with your package manager"
else
  missing_debs=()
  for deb in "${GL_DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "install ok installed" || missing_debs+=("$deb")
  done
  if [ ${#missing_debs[@]} -eq 0 ]; then
    ok "${GL_DEBS[*]} present"
  elif [ "$(id -u)" = 0 ]; then
    echo "    apt-get install: ${missing_debs[*]}"
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing_debs[@]}" >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
             --no-install-recommends "${missing_debs[@]}" >/dev/null; }; } \
      && ok "installed" \
      || echo "    WARNING: apt-get install ${missing_debs[*]} failed; --render may not work (see dpmesh doctor)"
  else
    echo "    WARNING: missing ${missing_debs[*]} (needed only for --render); not root, so not installed."
    echo "             Run: sudo apt-get install ${missing_debs[*]}"
  fi
fi

# ---------------------------------------------------------------------------------------------------
# The Khronos glTF validator (npm gltf-validator), run with node by the tests that check scene.glb
# (tests/test_scene_glb.py). Debian's nodejs / npm are apt-installed only when missing and only as root;
# the validator goes into ${DPMESH_GLTF_VALIDATOR_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dpmesh/gltf-validator},
# outside the repository. A warning, not a failure, when it cannot be installed (the test then says so).
GLTF_VALIDATOR_PIN="gltf-validator@2.0.0-dev.3.10"
install_gltf_validator() {
  local dir="${DPMESH_GLTF_VALIDATOR_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dpmesh/gltf-validator}"
  local want="${GLTF_VALIDATOR_PIN##*@}" have="" debs=()
  command -v node >/dev/null 2>&1 || command -v nodejs >/dev/null 2>&1 || debs+=(nodejs)
  command -v npm >/dev/null 2>&1 || debs+=(npm)
  if [ ${#debs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "    apt-get install: ${debs[*]}"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${debs[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
               --no-install-recommends "${debs[@]}" >/dev/null; } \
        || { echo "    WARNING: apt-get install ${debs[*]} failed; the glTF validator test will not run"; return 0; }
    else
      echo "    WARNING: ${debs[*]} missing (not root, or no apt-get): the glTF validator test will not run."
      echo "             Run: sudo apt-get install ${debs[*]} && bash install.sh"
      return 0
    fi
  fi
  local node_bin
  node_bin="$(command -v node || command -v nodejs)"
  have="$("$node_bin" -e "console.log(require(process.argv[1]).version)" \
            "$dir/node_modules/gltf-validator/package.json" 2>/dev/null || true)"
  if [ "$have" = "$want" ]; then
    ok "$GLTF_VALIDATOR_PIN present in $dir"
  elif mkdir -p "$dir" && npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
         "$GLTF_VALIDATOR_PIN" >/dev/null; then
    ok "installed $GLTF_VALIDATOR_PIN into $dir"
  else
    echo "    WARNING: npm install $GLTF_VALIDATOR_PIN failed; the glTF validator test will fail until it is installed"
  fi
}
step "glTF validator for the scene.glb tests (node, npm gltf-validator)"
install_gltf_validator

# ---------------------------------------------------------------------------------------------------
step "demo: web demo (gradio), and selenium + Chromium for its browser test"
install_missing "${DEMO_REQS[@]}"
demo_info="$(py -c 'import gradio, selenium, PIL; print("gradio", gradio.__version__, "selenium", selenium.__version__, "pillow", PIL.__version__)' 2>&1 | tail -n 1)" \
  && ok "$demo_info" || echo "    WARNING: gradio/selenium do not import ($demo_info); dpmesh demo will not start"
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  ok "chromium and chromedriver present"
elif ! command -v apt-get >/dev/null 2>&1; then
  echo "    note: no apt-get; the demo's browser test needs Chromium and chromedriver (it skips without them)"
elif [ "$(id -u)" = 0 ]; then
  echo "    apt-get install: ${DEMO_DEBS[*]}"
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${DEMO_DEBS[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
           --no-install-recommends "${DEMO_DEBS[@]}" >/dev/null; }; } \
    && ok "installed ($(chromium --version 2>/dev/null | head -n 1))" \
    || echo "    WARNING: apt-get install ${DEMO_DEBS[*]} failed; the demo's browser test will skip"
else
  echo "    WARNING: no Chromium/chromedriver (needed only by the demo's browser test); not root, so not installed."
  echo "             Run: sudo apt-get install ${DEMO_DEBS[*]}"
fi
write_constraints

# ---------------------------------------------------------------------------------------------------
step "5/6 OpenMMLab stack (mmengine, mmcv-lite, mmdet, mmpose, xtcocotools)"
need=$(check missing "${MM_RUNTIME[@]}")
if [ -n "$need" ]; then
  echo "    runtime needs: $(echo $need)"
  pip_ install -q -c "$CONSTRAINTS" $need
else
  ok "runtime needs present"
fi
# Full mmcv (compiled ops, e.g. on a CUDA machine) is fine at 2.1.x; mmcv-lite must not overwrite it.
mmcv_full="$(py -c 'from importlib import metadata as m; print(m.version("mmcv"))' 2>/dev/null || true)"
if [ -n "$mmcv_full" ]; then
  case "$mmcv_full" in
    2.1.*) ok "keeping full mmcv $mmcv_full (instead of mmcv-lite)"; MM_PINS=("${MM_PINS[@]/mmcv-lite==2.1.0/}") ;;
    *) die "mmcv $mmcv_full is installed; mmdet 3.3.0 needs mmcv < 2.2.0. Remove it ($PY -m pip uninstall -y mmcv) or install mmcv 2.1.x, then re-run." ;;
  esac
fi
need=$(check missing ${MM_PINS[@]})
if [ -n "$need" ]; then
  echo "    installing with --no-deps: $(echo $need)"
  pip_ install -q --no-deps $need
else
  ok "${MM_PINS[*]} present"
fi
if [ -z "$(check missing "$XTCOCO_PIN")" ] && py -c 'import xtcocotools._mask' >/dev/null 2>&1; then
  ok "$XTCOCO_PIN present and built for numpy $(py -c 'import numpy; print(numpy.__version__)')"
else
  echo "    building $XTCOCO_PIN from source against numpy $(py -c 'import numpy; print(numpy.__version__)')"
  pip_ install -q --no-deps --no-build-isolation --no-binary xtcocotools --force-reinstall "$XTCOCO_PIN" \
    || die "building $XTCOCO_PIN failed: it needs a C compiler (gcc) and the Python headers (Debian: apt-get install build-essential python3-dev)."
  py -c 'import xtcocotools._mask' || die "$XTCOCO_PIN was built but does not import."
fi

# ---------------------------------------------------------------------------------------------------
# Video input/output: the "video" extra of pyproject.toml (PyAV, pygltflib), installed when missing.
VIDEO_REQS=("av>=12" "pygltflib>=1.16")
install_video_stack() {
  install_missing "${VIDEO_REQS[@]}"
  py -c 'import av, pygltflib; print("    ok: PyAV", av.__version__, "imports, pygltflib", pygltflib.__version__)' \
    || die "PyAV or pygltflib does not import (see above)."
}
step "video: PyAV and pygltflib"
install_video_stack

# ---------------------------------------------------------------------------------------------------
# Scale-out: the "ray" extra of pyproject.toml (Ray Data, for `dpmesh predict --engine ray`), when missing.
RAY_REQS=("ray[data]>=2.40,<2.64")
install_ray_stack() {
  install_missing "${RAY_REQS[@]}"
  py -c 'import ray, ray.data; print("    ok: ray", ray.__version__, "with Ray Data imports")' \
    || die "ray[data] does not import (see above)."
}
step "ray: Ray Data for --engine ray"
install_ray_stack
write_constraints

# ---------------------------------------------------------------------------------------------------
step "6/6 check"
if [ -z "$(check missing torchvision)" ]; then
  py -c 'import torchvision' >/dev/null 2>&1 \
    || die "torchvision is installed but does not import (it breaks 'import peft'); remove it: $PY -m pip uninstall -y torchvision"
  echo "    note: torchvision $(py -c 'import torchvision; print(torchvision.__version__)') is installed and imports; dpmesh does not need it."
fi
py - <<'EOF' || die "the import check failed (see above)."
import importlib
for name in ("torch", "numpy", "diffusers", "transformers", "peft", "smplx", "typer", "rich"):
    importlib.import_module(name)
from dpmesh_infer.detect import mmpose_compat
mmpose_compat.import_mmpose()
import mmengine, mmcv, mmdet, mmpose, torch, numpy
print(f"    ok: torch {torch.__version__}, numpy {numpy.__version__}, mmengine {mmengine.__version__}, "
      f"mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmpose {mmpose.__version__}")
EOF
if render_info="$(py -c 'from dpmesh_infer.render import Renderer
r = Renderer(); print(r.platform); r.close()' 2>&1 | tail -n 1)" && [ -n "$render_info" ]; then
  ok "headless rendering works ($render_info)"
else
  echo "    WARNING: headless rendering does not work, so dpmesh predict --render will fail: $render_info"
fi
step "done in $((SECONDS - T0)) s. Try: dpmesh --help"
