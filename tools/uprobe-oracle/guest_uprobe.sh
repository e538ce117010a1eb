#!/bin/sh
# uprobe-oracle guest /init (busybox ash).  /oracle/conf sets NONCE; /oracle/target is the
# file to probe, /oracle/offsets has "<idx> <hex offset>" lines.  A copy of the target runs
# (as busybox "sleep") so that a process maps it: enabling a uprobe then installs it, and
# prepare_uprobe/arch_uprobe_analyze_insn give their verdict to the enable write.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
NONCE=none; RUN="sleep 100000"
[ -r /oracle/conf ] && . /oracle/conf
M="@@UO$NONCE"
say() { echo "$M $*"; }
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
echo "1 4 1 7" > /proc/sys/kernel/printk 2>/dev/null
T=/sys/kernel/tracing
[ -e $T/uprobe_events ] || T=/sys/kernel/debug/tracing
UE=$T/uprobe_events
say BEGIN $NONCE
say UNAME "$(uname -a)"
mkdir -p /tmp/u
if [ -d /oracle/lib ]; then
  # a shared library: its loader runs a tiny program linked against it
  cp /oracle/lib/* /tmp/u/
  chmod 755 /tmp/u/*
  TGT=/tmp/u/$LIBNAME
  /tmp/u/$LOADER --library-path /tmp/u /tmp/u/sleeper &
else
  # a static busybox, named so that it runs its applet
  cp /oracle/target /tmp/u/busybox
  chmod 755 /tmp/u/busybox
  TGT=/tmp/u/busybox
  /tmp/u/busybox $RUN &
fi
PID=$!
usleep 500000
grep $TGT /proc/$PID/maps > /tmp/maps
while read -r l; do say MAP "$l"; done < /tmp/maps
[ -s /tmp/maps ] || say FATAL "no process maps the target"
say SIZE "$(wc -c < $TGT)"
[ -w $UE ] || say FATAL "no uprobe_events at $UE"
: > $UE
say READY
while read -r idx off; do
  if echo "p:uo/p$idx $TGT:$off" 2>/tmp/e >> $UE; then
    if echo 1 2>/tmp/e > $T/events/uo/p$idx/enable; then
      say U $idx 1
      echo 0 > $T/events/uo/p$idx/enable
    else
      read -r err < /tmp/e; say U $idx 0 EN "$err"
    fi
    echo "-:uo/p$idx" 2>/tmp/e >> $UE || { read -r err < /tmp/e; say DELFAIL $idx "$err"; }
  else
    read -r err < /tmp/e; say U $idx 0 REG "$err"
  fi
done < /oracle/offsets
kill $PID 2>/dev/null
say END
sync
poweroff -f
sleep 5
echo o > /proc/sysrq-trigger
