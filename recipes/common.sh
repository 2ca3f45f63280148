# Shared by every recipes/**/run.sh (sourced, never run): the option parser, log() and the
# mini-corpus set-up, so that each run.sh only declares its options and stages
# (the ESPnet utils/parse_options.sh and wespeaker tools/ pattern).
#
#   . "$(dirname "$0")/../../common.sh"        # (recipes/TEMPLATE/run.sh: ../common.sh)
#   option stage 0 "first stage to run"
#   option exp "" "output folder (default: results/<recipe>_run)"
#   flag mini "the embedded mini corpus and a tiny random upstream"
#   parse_options "$@"
#   cd "$repo_root"
#   if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then log "Stage 1: ..."; ...; fi
#
# Options: `--name value` or `--name=value` (`--stop-stage` = `--stop_stage`); a flag is
# `--name` (or `--name true|false`); everything after `--` goes to "${extra_args[@]}" (hparams
# overrides for the Python scripts). `-h`/`--help` prints the run.sh header comment and the
# options with their defaults. An unknown option or a missing value stops with the list of
# valid options. The variables option/flag set are plain shell variables of the run.sh.

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
extra_args=()
help_file=$0                               # whose header --help prints (wrappers set theirs)
_script_dir=$(cd "$(dirname "$0")" && pwd -P)
log_name=${_script_dir#"$repo_root"/recipes/}/$(basename "$0")   # e.g. LibriSpeech/ssft/run.sh
_option_names=()
_option_help=()
_option_defaults=()

# option NAME DEFAULT [HELP]: declare --NAME (sets the shell variable NAME, default DEFAULT).
option() {
    printf -v "$1" '%s' "$2"
    _option_names+=("$1")
    _option_help+=("${3:-}")
    _option_defaults+=("$2")
}

# flag NAME [HELP]: declare the switch --NAME (NAME=false unless given).
flag() {
    option "$1" false "${2:-}"
    _option_names[${#_option_names[@]} - 1]="$1:flag"
}

_print_help() {
    awk 'NR == 1 && /^#!/ {next} /^#/ {sub(/^# ?/, ""); print; next} {exit}' "$help_file"
    echo
    echo "Options (default in brackets):"
    local _o_i _o_name _o_value
    for _o_i in "${!_option_names[@]}"; do
        _o_name=${_option_names[$_o_i]%:flag}
        _o_value=${_option_defaults[$_o_i]}
        if [ "$_o_name" != "${_option_names[$_o_i]}" ]; then
            printf '  --%-24s %s\n' "$_o_name" "${_option_help[$_o_i]}"
        elif [ -n "$_o_value" ]; then
            printf '  --%-24s %s [%s]\n' "$_o_name VALUE" "${_option_help[$_o_i]}" "$_o_value"
        else
            printf '  --%-24s %s\n' "$_o_name VALUE" "${_option_help[$_o_i]}"
        fi
    done
    printf '  %-26s %s\n' "-- ARGS" "passed on to the Python scripts (e.g. -- --batch_size=8)"
}

_option_list() {
    local _o_entry _o_out=""
    for _o_entry in "${_option_names[@]}"; do _o_out+=" --${_o_entry%:flag}"; done
    echo "${_o_out# }"
}

# parse_options "$@": set the declared options from the command line (see the top of this file).
parse_options() {
    local _o_arg _o_name _o_value _o_has_value _o_entry _o_kind
    while [ $# -gt 0 ]; do
        _o_arg=$1
        shift
        case "$_o_arg" in
            --) extra_args+=("$@"); break ;;
            -h|--help) _print_help; exit 0 ;;
            --*) ;;
            *)
                echo "$log_name: unexpected argument '$_o_arg' (options start with --; arguments" \
                    "for the Python scripts go after --; see --help)" >&2
                exit 2 ;;
        esac
        _o_name=${_o_arg#--}
        _o_has_value=false
        if [[ "$_o_name" == *=* ]]; then
            _o_value=${_o_name#*=}
            _o_name=${_o_name%%=*}
            _o_has_value=true
        fi
        _o_name=${_o_name//-/_}
        _o_kind=""
        for _o_entry in "${_option_names[@]}"; do
            if [ "$_o_entry" = "$_o_name" ]; then _o_kind=option; fi
            if [ "$_o_entry" = "$_o_name:flag" ]; then _o_kind=flag; fi
        done
        if [ -z "$_o_kind" ]; then
            echo "$log_name: unknown option --$_o_name; the options are: $(_option_list)" \
                "(see --help)" >&2
            exit 2
        fi
        if [ "$_o_kind" = flag ]; then
            if ! $_o_has_value && { [ "${1:-}" = true ] || [ "${1:-}" = false ]; }; then
                _o_value=$1
                shift
            elif ! $_o_has_value; then
                _o_value=true
            fi
            if [ "$_o_value" != true ] && [ "$_o_value" != false ]; then
                echo "$log_name: --$_o_name is a switch: give --$_o_name, --$_o_name true or" \
                    "--$_o_name false, not '$_o_value'" >&2
                exit 2
            fi
        elif ! $_o_has_value; then
            if [ $# -eq 0 ]; then
                echo "$log_name: --$_o_name needs a value (see --help)" >&2
                exit 2
            fi
            _o_value=$1
            shift
        fi
        printf -v "$_o_name" '%s' "$_o_value"
    done
    local _o_int
    for _o_int in stage stop_stage ngpu; do
        if [[ " ${_option_names[*]} " == *" $_o_int "* ]] && ! [[ "${!_o_int}" =~ ^-?[0-9]+$ ]]; then
            echo "$log_name: --$_o_int takes an integer, got '${!_o_int}'" >&2
            exit 2
        fi
    done
}

# log MESSAGE...: a time-stamped line naming the run.sh line that logged it (for a helper of
# this file: the run.sh line that called the helper).
log() {
    local _o_i=0
    while [ "${BASH_SOURCE[$((_o_i + 1))]:-}" = "${BASH_SOURCE[0]}" ]; do
        _o_i=$((_o_i + 1))
    done
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') ($log_name:${BASH_LINENO[$_o_i]}) $*"
}

# mini_corpus ROOT: generate the embedded mini corpus in ROOT unless it is there already.
mini_corpus() {
    if [ -f "$1/mini_corpus.json" ]; then
        log "mini corpus already at $1"
    else
        python -m lasersb.data.mini --out "$1"
    fi
}

# tiny_upstream KIND FOLDER: save a tiny random HF upstream (hubert, wavlm, wav2vec2) in FOLDER.
tiny_upstream() {
    if [ -f "$2/config.json" ]; then
        log "tiny upstream already at $2"
    else
        python -m lasersb.models.tiny_upstream --kind "$1" --out "$2"
    fi
}

# default_device: cuda:0 when torch sees a GPU, else cpu.
default_device() {
    python -c "import torch; print('cuda:0' if torch.cuda.is_available() else 'cpu')"
}

# launcher NGPU: the command that starts a training script on NGPU local processes.
launcher() {
    if [ "$1" -gt 1 ]; then
        echo "torchrun --standalone --nproc_per_node=$1"
    else
        echo python
    fi
}

# mini_dino FOLDER MINI_ROOT DEVICE: pre-train the tiny DINO model the transfer recipes
# (IEMOCAP, ADReSS) start from with --mini, unless FOLDER/embedding_model.ckpt exists.
mini_dino() {
    if [ -f "$1/embedding_model.ckpt" ]; then
        log "tiny DINO model already at $1"
        return
    fi
    log "Pre-training a tiny DINO model in $1"
    python recipes/VoxCeleb/dino/train.py recipes/VoxCeleb/dino/hparams/dino_mini.yaml \
        --data_folder="$2/VoxCeleb1" --noise_folder="$2/DEMAND" --output_folder="$1" \
        --score_after_training=False --device="$3"
}
