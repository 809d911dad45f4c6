#!/usr/bin/env bash
# Regenerate the tables of docs/RESULTS.md with one command (issue 6's evaluation suite: both protocols x
# the methods: the four of issue 6 + ours-relative). Usage:
#   bash scripts/results.sh cpu            # CPU profile, everything here (about 10 min on 2 cores)
#   bash scripts/results.sh gpu-prepare    # CPU machine: bundles for the GPU profile (MediaPipe)
#   bash scripts/results.sh gpu-produce    # GPU machine: enrollment + the methods (torch only)
#   bash scripts/results.sh gpu-opening    # GPU machine, optional: the opening_weight experiment
#   bash scripts/results.sh gpu-variants   # GPU machine, optional: opening_weight x latent_sigma variants
#   bash scripts/results.sh gpu-enrollments # GPU machine, optional: ENROLLMENTS fresh enrollments x VARIANTS
#   bash scripts/results.sh gpu-paper      # GPU machine, optional: the per-frame baseline (c) in PARTS slices side by side
#   bash scripts/results.sh baselines      # any machine, CPU: nearest + warp on $OUT's bundles, no enrollment
# FRAMES (default 24) sets the driving frames per protocol of the gpu-* modes (the 96-frame cross run of
# docs/RESULTS.md: FRAMES=96 OUT=runs/results-gpu96); SELF_FRAMES (gpu-prepare) gives the self protocol its
# own count (FRAMES=120 SELF_FRAMES=24: the whole carphone clip, a short self check). FRAMES_FORMAT=jpg stores the gpu-* outputs as JPEG
# quality 95 (~8x smaller to copy back to the CPU machine; default npz, lossless).
# JAW_DROP (gpu-prepare) renders the fixture person with a wider jaw opening (reenact.fixtures: default 0.16;
# 0.24 gives a scan whose mouth ratio reaches ~0.53 instead of ~0.41, docs/RESULTS.md "sixth session").
#   bash scripts/results.sh gpu-score      # CPU machine: metrics, results.md, report.html (MediaPipe, dlib)
#   bash scripts/results.sh real-prepare   # CPU: a REAL person (the carphone man: scan = the clip's first 90
#                                          # frames, identity references = its last 30, seen by no method) driven
#                                          # by another person (the astronaut fixture), docs/RESULTS.md "eleventh session"
#   bash scripts/results.sh real-enrollments  # GPU (or CPU): ENROLLMENTS (default 2) enrollments x VARIANTS on that bundle
#   bash scripts/results.sh real-generators # GPU (or CPU): GENERATORS, enrollments with other profile fields side by
#                                          # side, M on each, and every anchor rendered (docs/RESULTS.md "twelfth session")
#   bash scripts/results.sh real-score     # CPU: nearest + warp (no GPU needed), the score of every output, and
#                                          # the anchors' identity (benchmarks/anchor_identity.py) where rendered
# RES and PROFILE (real-prepare, real-generators, real-enrollments): the real bundle's resolution and the enrollment profile
# (default 256 and gpu; RES=64 PROFILE=cpu-quick DEVICE=cpu is the CPU-scale run of the twelfth session).
# Output: $OUT (default runs/results-<profile>)/results.md, {self,cross}/results.json and report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-cpu}
if [ -x .venv/bin/python ]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python3}; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
suite() { "$PY" -m reenact.evaluation suite "$@"; }
# (d) ours twice: the engine's defaults (motion absolute) and motion=relative (reenact.optimize.retarget)
METHODS=${METHODS:-nearest,warp,paper,ours,ours-relative}
case "$what" in
  cpu)
    OUT=${OUT:-runs/results-cpu}
    suite --out "$OUT" --profile cpu-quick --device cpu --frames 30 --crop-size 128 --paper-steps 100 --methods "$METHODS" ;;
  gpu-prepare)
    OUT=${OUT:-runs/results-gpu}
    suite --out "$OUT" --phase prepare --profile gpu --frames "${FRAMES:-24}" --crop-size 256 \
      ${SELF_FRAMES:+--self-frames "$SELF_FRAMES"} ${JAW_DROP:+--fixture-jaw-drop "$JAW_DROP"} ;;
  gpu-produce)
    # Needs torch (CUDA), numpy, opencv and this repository; the MobileNetV2 weights of the perceptual
    # distance ($REENACT_WEIGHTS_DIR or .cache/weights, from `python -m reenact.perceptual --fetch`).
    OUT=${OUT:-runs/results-gpu}
    suite --out "$OUT" --phase produce --profile gpu --device cuda --frames "${FRAMES:-24}" --crop-size 256 --paper-steps 100 \
      --methods "$METHODS" --frames-format "${FRAMES_FORMAT:-npz}" ;;
  gpu-opening|gpu-variants)
    # Engine-option variants of ours-relative (docs/RESULTS.md: the opening-ratio term, latent smoothing, init mixed),
    # after gpu-produce on the same GPU machine (they use the person gpu-produce enrolled): one folder
    # $OUT/<protocol>-<name> per variant. VARIANTS: "name:opt=v,opt=v ..."; PROTOCOLS: "self cross".
    # Score each folder on the CPU machine: `reenact eval score <folder> --bundle $OUT/<protocol>/bundle.npz`.
    OUT=${OUT:-runs/results-gpu}
    if [ "$what" = gpu-opening ]; then
      default=""; for w in ${WEIGHTS:-1 4 10}; do default="$default ow$w:opening_weight=$w"; done
      vmethods=ours,ours-relative
    else
      vmethods=ours-relative
      default="ow4:opening_weight=4 ow0ls1:latent_sigma=1 ow4ls1:opening_weight=4,latent_sigma=1 ow4ls2:opening_weight=4,latent_sigma=2 ow4ls3:opening_weight=4,latent_sigma=3 ow10ls1:opening_weight=10,latent_sigma=1 ow10ls2:opening_weight=10,latent_sigma=2 ct4ls1:opening_weight=4,latent_sigma=1,keypoint_subset=contours mix:opening_weight=4,latent_sigma=1,init=mixed mixls2:opening_weight=4,latent_sigma=2,init=mixed mixow10ls2:opening_weight=10,latent_sigma=2,init=mixed mixls2ms1:opening_weight=4,latent_sigma=2,init=mixed,mouth_starts=1 mixls2or2:opening_weight=4,latent_sigma=2,init=mixed,opening_range=2 mixls2or2ms1:opening_weight=4,latent_sigma=2,init=mixed,opening_range=2,mouth_starts=1"
    fi
    store="file://$(cd "$OUT" && pwd)/self/store"
    for v in ${VARIANTS:-$default}; do
      name=${v%%:*}; sets=(); IFS=, read -ra kvs <<< "${v#*:}"
      for kv in "${kvs[@]}"; do sets+=(--ours-set "$kv"); done
      for p in ${PROTOCOLS:-self cross}; do
        "$PY" -m reenact.evaluation produce "$OUT/$p/bundle.npz" --out "$OUT/$p-$name" --device cuda --profile gpu \
          --methods "$vmethods" --store "$store" --person person --frames-format "${FRAMES_FORMAT:-npz}" "${sets[@]}"
      done
    done ;;
  gpu-enrollments)
    # The enrollment moves mouth r more than the options (docs/RESULTS.md): ENROLLMENTS (default 3) fresh
    # enrollments of the same scan, each from $OUT/self/bundle.npz into $OUT/enroll<i>/self (ours-relative on
    # the self protocol with the first variant's options), then every variant on PROTOCOLS (default cross):
    # $OUT/enroll<i>/<protocol>-<name>. VARIANTS as for gpu-variants, default: M and M + lip_warp 1 (the recommended
    # cross setting, docs/RESULTS.md "tenth session").
    OUT=${OUT:-runs/results-gpu}
    m=opening_weight=4,latent_sigma=2,init=mixed
    for i in $(seq 1 "${ENROLLMENTS:-3}"); do
      e="$OUT/enroll$i"; first=1
      for v in ${VARIANTS:-"M:$m" "Mlw:$m,lip_warp=1"}; do
        name=${v%%:*}; sets=(); IFS=, read -ra kvs <<< "${v#*:}"
        for kv in "${kvs[@]}"; do sets+=(--ours-set "$kv"); done
        if [ $first = 1 ]; then  # enrolls (no --store): the self protocol with this variant
          "$PY" -m reenact.evaluation produce "$OUT/self/bundle.npz" --out "$e/self" --device cuda --profile gpu \
            --methods ours-relative --frames-format "${FRAMES_FORMAT:-npz}" "${sets[@]}"
          first=0
        fi
        for p in ${PROTOCOLS:-cross}; do
          "$PY" -m reenact.evaluation produce "$OUT/$p/bundle.npz" --out "$e/$p-$name" --device cuda --profile gpu \
            --methods ours-relative --store "file://$(cd "$e/self" && pwd)/store" --person person \
            --frames-format "${FRAMES_FORMAT:-npz}" "${sets[@]}"
        done
      done
    done ;;
  gpu-paper)
    # The per-frame baseline (c) over a long driver: PARTS (default 4) slices of $OUT/$PROTOCOL/bundle.npz
    # (PROTOCOL default cross) produced side by side against the stored person STORE (default: the first
    # enrollment of gpu-enrollments, $OUT/enroll1/self/store), PAPER_STEPS (default 100) steps per frame, then
    # merged (exact: every frame of paper is alone) into $OUT/$PROTOCOL-paper; the parts stay in
    # $OUT/$PROTOCOL-paper-parts. Side by side the parts share the GPU, so their frames/s is lower than one
    # run's; PARALLEL=0 runs them one after another (a clean frames/s). DEVICE (default cuda).
    OUT=${OUT:-runs/results-gpu}; p=${PROTOCOL:-cross}; b="$OUT/$p/bundle.npz"
    store=${STORE:-"file://$(cd "$OUT/enroll1/self" && pwd)/store"}
    n=$("$PY" -c "import sys; from reenact.evaluation.bundle import read_meta; print(read_meta(sys.argv[1])[1])" "$b")
    k=${PARTS:-4}; parts="$OUT/$p-paper-parts"; mkdir -p "$parts"; pids=(); outs=()
    for i in $(seq 0 $((k - 1))); do
      s=$((i * n / k)); e=$(((i + 1) * n / k)); [ "$e" -gt "$s" ] || continue
      "$PY" -m reenact.evaluation slice "$b" --start "$s" --end "$e" --no-scan -o "$parts/slice$s.npz"
      run=("$PY" -m reenact.evaluation produce "$parts/slice$s.npz" --out "$parts/p$s" --device "${DEVICE:-cuda}"
           --profile gpu --methods paper --paper-steps "${PAPER_STEPS:-100}" --store "$store" --person person
           --frames-format "${FRAMES_FORMAT:-npz}")
      outs+=("$parts/p$s")
      if [ "${PARALLEL:-1}" = 1 ]; then "${run[@]}" > "$parts/p$s.log" 2>&1 & pids+=($!); else "${run[@]}"; fi
    done
    fail=0; for pid in "${pids[@]}"; do wait "$pid" || fail=1; done
    if [ $fail = 1 ]; then echo "a part failed: see $parts/p*.log" >&2; exit 1; fi
    "$PY" -m reenact.evaluation merge "$OUT/$p-paper" "${outs[@]}" --bundle "$b" ;;
  baselines)
    # nearest + warp need no generator: on the bundles' self-scan, no enrollment, CPU seconds ($OUT/<protocol>-baselines)
    OUT=${OUT:-runs/results-gpu}
    for p in ${PROTOCOLS:-self cross}; do
      "$PY" -m reenact.evaluation produce "$OUT/$p/bundle.npz" --out "$OUT/$p-baselines" --methods nearest,warp
      "$PY" -m reenact.evaluation score "$OUT/$p-baselines"
    done ;;
  gpu-score)
    OUT=${OUT:-runs/results-gpu}
    suite --out "$OUT" --phase score --profile gpu --frames "${FRAMES:-24}" --crop-size 256 ;;
  real-prepare)
    # The only real recording offline is the carphone clip (120 frames): here it is the PERSON. Its last
    # HOLDOUT (default 30) frames are held out of the enrollment and of the baselines and are the identity
    # references; the driver is another person: the astronaut fixture on a held-out schedule within the
    # clip's pose range (YAW_MAX 15, PITCH_MAX 12 deg), with ground truth.
    OUT=${OUT:-runs/results-real}
    "$PY" -m reenact.fixtures --face astronaut --heldout --frames "${FRAMES:-120}" --size 256 --seed 3 \
      --yaw-max "${YAW_MAX:-15}" --pitch-max "${PITCH_MAX:-12}" --out "$OUT/driver"
    scan=$("$PY" -c "from reenact.samples import carphone_video_path; print(carphone_video_path())")
    "$PY" -m reenact.evaluation prepare --driving "$OUT/driver/selfscan.mp4" --ground-truth "$OUT/driver/ground_truth.json" \
      --scan "$scan" --identity-holdout "${HOLDOUT:-30}" --crop-size "${RES:-256}" --profile "${PROFILE:-gpu}" \
      --profile-set resolution="${RES:-256}" --protocol cross \
      --notes "REAL person: the carphone man (scan: the clip's first frames; identity references: its last ${HOLDOUT:-30}, seen by no method); driver: another person, the astronaut TEST FIXTURE" \
      -o "$OUT/cross/bundle.npz" ;;
  real-enrollments)
    # GPU: ENROLLMENTS fresh enrollments of the real-prepare bundle's scan side by side ($OUT/e<i>: the first
    # variant, which enrolls), then the other VARIANTS against each stored person ($OUT/e<i>-<name>).
    # PROFILE_SET ("field=v,field=v"): profile fields of the enrollments (e.g. seed=1); DEVICE, PROFILE and
    # RES as for real-generators (DEVICE=cpu PROFILE=cpu-quick RES=64: the CPU-scale run).
    OUT=${OUT:-runs/results-real}; b="$OUT/cross/bundle.npz"; m=opening_weight=4,latent_sigma=2,init=mixed
    dev=${DEVICE:-cuda}; psets=(--profile-set resolution="${RES:-256}")
    IFS=, read -ra kvs <<< "${PROFILE_SET:-}"; for kv in "${kvs[@]}"; do psets+=(--profile-set "$kv"); done
    [ "$dev" = cuda ] || psets+=(--profile-set p0_samples=0)  # CPU: no P0 check (as real-generators)
    set -- ${VARIANTS:-"M:$m" "Mlw:$m,lip_warp=1"}
    opts() { local sets=() kvs; IFS=, read -ra kvs <<< "${1#*:}"; for kv in "${kvs[@]}"; do sets+=(--ours-set "$kv"); done
             echo "${sets[@]}"; }
    pids=(); for i in $(seq 1 "${ENROLLMENTS:-2}"); do
      # shellcheck disable=SC2046
      "$PY" -m reenact.evaluation produce "$b" --out "$OUT/e$i" --device "$dev" --profile "${PROFILE:-gpu}" "${psets[@]}" \
        --methods ours-relative --frames-format "${FRAMES_FORMAT:-jpg}" $(opts "$1") > "$OUT/e$i.log" 2>&1 & pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done; first=$1; shift
    for v in "$@"; do pids=(); for i in $(seq 1 "${ENROLLMENTS:-2}"); do
      # shellcheck disable=SC2046
      "$PY" -m reenact.evaluation produce "$b" --out "$OUT/e$i-${v%%:*}" --device "$dev" --profile "${PROFILE:-gpu}" --methods ours-relative \
        --store "file://$(cd "$OUT/e$i" && pwd)/store" --person person --frames-format "${FRAMES_FORMAT:-jpg}" \
        $(opts "$v") > "$OUT/e$i-${v%%:*}.log" 2>&1 & pids+=($!)
    done; for pid in "${pids[@]}"; do wait "$pid"; done; done
    echo "enrolled with ${first%%:*}: $OUT/e<i>; variants: $OUT/e<i>-<name>" ;;
  real-generators)
    # Is the identity gap the generator's? GENERATORS: "name:field=v,field=v ..." (profile fields; an empty list
    # keeps the profile), each enrolled from the real-prepare bundle's scan into $OUT/g-<name> side by side with
    # M (motion relative, opening_weight 4, latent_sigma 2, init mixed), then every anchor's W rendered into
    # $OUT/g-<name>/anchors.npz (scored by real-score on the CPU, where dlib is).
    OUT=${OUT:-runs/results-real}; b="$OUT/cross/bundle.npz"; dev=${DEVICE:-cuda}
    pids=(); for g in ${GENERATORS:-"bp0:base_perceptual=0.0" "bp1:base_perceptual=1.0" "bp1s1:base_perceptual=1.0,seed=1" "bp1t1500:base_perceptual=1.0,tune_steps=1500"}; do
      name=${g%%:*}; sets=(); IFS=, read -ra kvs <<< "${g#*:}"
      for kv in "${kvs[@]}"; do sets+=(--profile-set "$kv"); done
      [ "$dev" = cuda ] || sets+=(--profile-set p0_samples=0)  # CPU: no P0 check (its renders take long here)
      ( "$PY" -m reenact.evaluation produce "$b" --out "$OUT/g-$name" --device "$dev" --profile "${PROFILE:-gpu}" \
          --profile-set resolution="${RES:-256}" --methods ours-relative --frames-format "${FRAMES_FORMAT:-jpg}" \
          --ours-set opening_weight=4 --ours-set latent_sigma=2 --ours-set init=mixed "${sets[@]}" &&
        "$PY" benchmarks/anchor_identity.py render --store "file://$(cd "$OUT/g-$name" && pwd)/store" \
          --out "$OUT/g-$name/anchors.npz" --device "$dev" ) > "$OUT/g-$name.log" 2>&1 & pids+=($!)
    done
    rc=0; for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    echo "generators: $OUT/g-<name> (logs $OUT/g-<name>.log)"; exit $rc ;;
  real-score)
    OUT=${OUT:-runs/results-real}; b="$OUT/cross/bundle.npz"
    "$PY" -m reenact.evaluation produce "$b" --out "$OUT/baselines" --methods nearest,warp
    for d in "$OUT/baselines" "$OUT"/e[0-9]*/ "$OUT"/g-*/; do
      if [ -f "$d/produce.json" ]; then "$PY" -m reenact.evaluation score "$d" --bundle "$b"; fi
      if [ -f "$d/anchors.npz" ]; then
        "$PY" benchmarks/anchor_identity.py score --renders "$d/anchors.npz" --bundle "$b" --json "$d/anchors.json"
      fi
    done ;;
  *) echo "usage: $0 cpu|gpu-prepare|gpu-produce|gpu-opening|gpu-variants|gpu-enrollments|gpu-paper|baselines|gpu-score|real-prepare|real-enrollments|real-generators|real-score" >&2; exit 2 ;;
esac
