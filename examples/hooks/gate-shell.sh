#!/usr/bin/env bash
# A coding agent's pre-tool-use hook: shell commands that match a pattern need a person's
# approval in Slack before they run; everything else passes untouched.
#
# It reads the tool call as JSON on stdin, e.g. {"tool_name": "Bash", "tool_input":
# {"command": "kubectl rollout restart deploy/checkout"}}, and answers with its exit code:
#   0  let the command run (not gated, or approved)
#   2  block it; the reason is on stderr, for the agent to read
# It fails closed: signoff unreachable, a bad configuration or no decision in time blocks.
#
# Environment: SIGNOFF_URL, SIGNOFF_AGENT, SIGNOFF_AGENT_SECRET (the agent's identity);
#   SIGNOFF_GATE_PATTERN   extended regex of commands to gate (default: kubectl|terraform|helm|systemctl)
#   SIGNOFF_GATE_WORKFLOW  the workflow to ask (default: shell-commands)
#   SIGNOFF_GATE_WAIT      seconds to wait for a decision (default: 300)
set -u

pattern="${SIGNOFF_GATE_PATTERN:-kubectl|terraform|helm|systemctl}"
workflow="${SIGNOFF_GATE_WORKFLOW:-shell-commands}"
wait_s="${SIGNOFF_GATE_WAIT:-300}"
signoff="${SIGNOFF_BIN:-signoff}"

call="$(cat)"
command="$(printf '%s' "$call" | python3 -c '
import json, sys
try:
    call = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
if call.get("tool_name") in ("Bash", "shell", "run_shell_command"):
    print((call.get("tool_input") or {}).get("command") or "", end="")
')"

if [ -z "$command" ] || ! printf '%s' "$command" | grep -Eq -- "$pattern"; then
    exit 0
fi

prompt_file="$(mktemp)"
trap 'rm -f "$prompt_file"' EXIT
printf '%s' "$call" > "$prompt_file"

json_text() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1]), end="")' "$1"; }
title="Run: ${command:0:180}"
# shellcheck disable=SC2086  # SIGNOFF_BIN may be a command with arguments
answer="$($signoff request --workflow "$workflow" --title "$title" \
    --type shell.command --target "${HOSTNAME:-localhost}" \
    --param "command=$(json_text "$command")" --param "cwd=$(json_text "$PWD")" \
    --justification "The coding agent wants to run this command: ${command:0:3000}" \
    --prompt-file "$prompt_file" --wait "$wait_s" 2>&1)"
code=$?

case $code in
    0) exit 0 ;;
    3) echo "signoff: a person rejected this command in Slack; do not retry it." >&2 ;;
    4) echo "signoff: nobody approved this command in time (expired); it was not run." >&2 ;;
    5) echo "signoff: the approval request was cancelled; the command was not run." >&2 ;;
    6) echo "signoff: no decision within ${wait_s}s; the command was not run. Ask again later." >&2 ;;
    *) echo "signoff: could not ask for approval, so the command is blocked: $answer" >&2 ;;
esac
exit 2
