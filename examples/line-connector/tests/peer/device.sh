#!/usr/bin/env bash
# A line-protocol device for the example connector's tests, run by socat for each connection
# (`socat TCP-LISTEN:port,reuseaddr,fork EXEC:"bash device.sh LOG COUNT"`): it sends COUNT
# numbered readings, answers commands, and appends every command it receives to LOG.
log=$1
count=${2:-5}
n=0
while :; do
  if [ "$n" -lt "$count" ]; then
    n=$((n + 1))
    echo "#$n temperature=2$n.5 running=true firmware=\"1.$n\""
  fi
  while :; do
    IFS= read -r -t 0.05 cmd
    rc=$?
    [ "$rc" -gt 128 ] && break # nothing more for now
    [ "$rc" -ne 0 ] && exit 0  # end of input: the gateway closed the connection
    echo "$cmd" >> "$log"
    set -f
    # shellcheck disable=SC2086
    set -- $cmd
    set +f
    case $1 in
      CALL)
        id=$2
        method=$3
        shift 3
        case $method in
          fail) echo "ERR $id broken" ;;
          silent) ;;
          *) printf 'OK %s {"echo":"%s"}\n' "$id" "${*//\"/\\\"}" ;;
        esac ;;
      SET) echo "OK $2" ;;
      ACK) ;;
      *) echo "junk line that is not a reading" ;;
    esac
  done
done
