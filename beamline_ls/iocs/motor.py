"""A positioner served as an EPICS motor record, behaving as one, so ophyd's EpicsMotor,
``caput -c`` and motor screens drive it unchanged.

What the record does here (field names as in the EPICS motor record):

- ``VAL`` user target; a put starts the move, shows the target at once, and its put
  completion (``caput -c``, pyepics ``wait=True``) ends when the move does. ``DVAL``
  (dial) and ``RVAL`` (steps of ``MRES``) move too. ``RBV``/``DRBV``/``RRBV``
  read back, ``DMOV``/``MOVN`` say whether it moves, ``MSTA`` carries the usual status
  bits, ``HLS``/``LLS`` say the axis is at the end of its travel.
- ``user = dial * (DIR) + OFF`` (:mod:`beamline_ls.iocs.motor_calibration`):
  ``SET`` = Set makes a ``VAL`` put recalibrate ``OFF`` so the current position reads
  as the value written -- nothing moves; ``FOFF`` = Frozen refuses that. User limits
  ``HLM``/``LLM`` and dial limits ``DHLM``/``DLLM`` are one pair seen two ways, clamped
  to the hardware travel; a move outside them is refused with ``LVIO`` = 1 and a CA
  error, never started. Offset, direction and limits survive an IOC restart (autosave).
- ``STOP`` stops and sets ``VAL`` to where the axis stopped; ``SPMG`` Stop/Pause/Move/Go
  (Pause keeps the target for Go; Move makes one move, then Pause); ``TWV`` with
  ``TWF``/``TWR`` tweak; ``JOGF``/``JOGR`` run towards a limit while 1; ``HOMF``/``HOMR``
  go to the home switch where the axis has one and are refused where it has none.
- ``VELO`` sets the speed of the moves that follow (and of one under way); ``JVEL`` and
  ``HVEL`` that of jogs and homing runs, after which ``VELO`` applies again; ``VMAX`` is
  the axis's fastest. An axis whose speed is not adjustable (piezo, galvos: a response
  time, not a speed; a controller without a speed command) takes only its one speed and
  refuses others, as do ``ACCL`` and ``VBAS``.

Every driver call runs on the axis's own worker thread; a poll loop keeps read-backs
current (fast while moving), so ``STOP`` is always served.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from caproto import AlarmSeverity, AlarmStatus, ChannelType
from caproto.server import PvpropertyDouble, pvproperty

from beamline_ls.hardware.positioner import PositionerDriver
from beamline_ls.iocs.alarms import RecordAlarms, clear_write_alarm
from beamline_ls.iocs.blocking import DeviceWorker
from beamline_ls.iocs.motor_calibration import MotorCalibration

log = logging.getLogger(__name__)

# MSTA bits (motor record documentation, "MSTA")
DIRECTION, DONE, PLUS_LS, HOMELS = 1 << 0, 1 << 1, 1 << 2, 1 << 3
HOME, PROBLEM, MOVING, COMM_ERR, MINUS_LS, HOMED = (1 << 7, 1 << 9, 1 << 10, 1 << 12,
                                                    1 << 13, 1 << 14)


def _enum(field) -> str:
    value = field.value
    return field.enum_strings[value] if isinstance(value, int) else str(value)


class MotorTarget(PvpropertyDouble):
    """VAL. Its control limits are the user limits, so clients can check a target
    before sending it; but the record judges a target beyond them itself (LVIO, as the
    motor record does), where a plain caproto PV would refuse the put before the
    record saw it, leaving clients that wait for DMOV waiting."""

    async def verify_value(self, value):
        if self.putter is not None:
            return await self.putter(self, value)
        return value


class MotorGroup(RecordAlarms):
    motor = pvproperty(value=0.0, name="", record="motor", precision=3, dtype=MotorTarget)
    #: the motor screens' Enable/Disable (motor's ``asyn_motor.db`` ``$(P)$(M)_able``,
    #: a bo writing the record's DISP): Disable refuses every put to the record
    able = pvproperty(value="Enable", name="_able", enum_strings=("Enable", "Disable"),
                      dtype=ChannelType.ENUM, doc="Disable: the motor takes no puts")

    def __init__(self, *args, driver: PositionerDriver, autosave: Path | None = None,
                 poll_s: float = 0.02, idle_poll_s: float = 0.2, **kwargs):
        super().__init__(*args, **kwargs)
        self.driver = driver
        self.poll_s = poll_s
        self.idle_poll_s = idle_poll_s
        self.autosave = autosave
        self.cal = (MotorCalibration.load(autosave, driver.limits) if autosave is not None
                    else MotorCalibration(driver.limits))
        self.resolution = 10.0 ** -(driver.precision + 1)  # MRES: finer than displayed
        self.tolerance = 10.0 ** -driver.precision
        self._moving = False
        self._jogging = False
        self._homed = False
        self._homing = False
        self._refused = False  # RBV carries the alarm of a refused move
        self._stopping = False  # a STOP's VAL is where the axis comes to rest
        self._direction = 1
        self._dial = 0.0
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._done.set()
        #: a halt and a move start one after the other, never interleaved, and a move
        #: ends only when neither is under way (see `_halt_now`, `_update`)
        self._motion_lock = asyncio.Lock()
        self._starts_waiting = 0  # moves waiting for a halt to end
        self._worker = DeviceWorker(self.prefix.rstrip(":") or "motor")
        self._fault = ""

    # ------------------------------------------------------------------ startup
    @motor.startup
    async def motor(self, instance, async_lib):
        f = instance.field_inst
        p = self.driver.precision
        for field in (f.user_readback_value, f.dial_readback_value, f.dial_desired_value,
                      f.user_high_limit, f.user_low_limit, f.dial_high_limit,
                      f.dial_low_limit, f.user_offset, f.tweak_step_size,
                      f.difference_dval_drbv):
            await field.write_metadata(precision=p, units=self.driver.units)
        # the motor record shows every other double field at PREC too (screens would
        # show ACCL = 0.2 s or MRES = 0.001 as "0")
        for field in (f.motor_step_size, f.encoder_step_size, f.readback_step_size,
                      f.egu_s_per_revolution, f.bl_distance, f.retry_deadband,
                      f.setpoint_deadband, f.seconds_to_velocity, f.bl_seconds_to_velocity,
                      f.bl_velocity, f.readback_settle_time, f.jog_accel):
            await field.write_metadata(precision=p)
        await instance.write_metadata(units=self.driver.units, precision=p)
        await f.display_precision.write(p)
        await f.motor_step_size.write(self.resolution)
        await f.engineering_units.write(self.driver.units)
        velocity = self.driver.velocity or 0.0
        for field in (f.velocity, f.jog_velocity, f.home_velocity, f.max_velocity,
                      f.base_velocity):
            await field.write_metadata(units=f"{self.driver.units}/sec", precision=p)
        for field in (f.velocity, f.jog_velocity, f.home_velocity):
            await field.write(velocity, verify_value=False)
        await f.max_velocity.write(self.driver.max_velocity, verify_value=False)
        if self.driver.acceleration_time is not None:
            await f.seconds_to_velocity.write(self.driver.acceleration_time,
                                              verify_value=False)
        if not f.tweak_step_size.value:
            lo, hi = self.driver.limits
            await f.tweak_step_size.write(round((hi - lo) / 100.0, p), verify_value=False)
        await f.done_moving_to_value.write(1)
        await f.motor_is_moving.write(0)
        try:
            self._dial = await self._worker.call(self.driver.position)
        except Exception as exc:  # hardware absent at start: keep serving, show the alarm
            await self._report_fault(instance, exc)
        await self._publish_calibration(instance)
        await instance.write(self.cal.user(self._dial), verify_value=False)
        await f.dial_desired_value.write(self._dial, verify_value=False)
        # screens title the motor with DESC: the axis's name after the IOC prefix
        await f.description.write(instance.pvname.partition(":")[2][:40] or instance.pvname)
        self._guard_disabled_puts(instance)
        # caproto's motor record starts with LVIO = 1; the target (here) is in limits
        await f.limit_violation.write(
            int(not self.cal.within_limits(instance.value, self.tolerance / 10)))
        while True:
            try:
                await self._update(instance)
                if self._fault:
                    self._fault = ""
                    await instance.write_metadata(status=AlarmStatus.NO_ALARM,
                                                  severity=AlarmSeverity.NO_ALARM)
                    log.info("%s: communication restored", instance.pvname)
            except Exception as exc:  # keep the loop alive; the driver may reconnect
                await self._report_fault(instance, exc)
            busy = self._moving or bool(f.motor_is_moving.value)
            try:  # poll fast while moving, slowly when idle; a new move wakes us
                await asyncio.wait_for(self._wake.wait(),
                                       self.poll_s if busy else self.idle_poll_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _report_fault(self, instance, exc: Exception) -> None:
        msg = f"{type(exc).__name__}: {exc}"
        if msg != self._fault:
            log.error("%s: %s", instance.pvname, msg)
            self._fault = msg
            await instance.write_metadata(status=AlarmStatus.COMM,
                                          severity=AlarmSeverity.INVALID_ALARM)
        if self._moving:  # a move cannot finish without the device: release waiters
            await self._finished(instance)

    # --------------------------------------------------------------- read-backs
    async def _update(self, instance) -> None:
        f = instance.field_inst
        dial = await self._worker.call(self.driver.position)
        moving = await self._worker.call(self.driver.is_moving)
        await self._publish_position(instance, dial)
        if moving != bool(f.motor_is_moving.value):
            await f.motor_is_moving.write(int(moving))
        # a move ends when the axis reports it has stopped, unless a new one is being
        # started (it holds the motion lock, or waits for a halt to hand it over)
        if (self._moving and not moving and not self._starts_waiting
                and not self._motion_lock.locked()):
            self._dial = await self._worker.call(self.driver.position)  # settled value
            await self._publish_position(instance, self._dial)
            await self._finished(instance)
        await self._publish_status(instance, moving)

    async def _publish_position(self, instance, dial: float) -> None:
        f = instance.field_inst
        self._dial = dial
        quantum = 10 ** -(self.driver.precision + 2)
        user = self.cal.user(dial)
        if abs(user - f.user_readback_value.value) > quantum:
            await f.user_readback_value.write(user, verify_value=False)
        if abs(dial - f.dial_readback_value.value) > quantum:
            await f.dial_readback_value.write(dial, verify_value=False)
            await f.raw_readback_value.write(int(round(dial / self.resolution)))
            await f.difference_dval_drbv.write(f.dial_desired_value.value - dial)

    async def _publish_status(self, instance, moving: bool) -> None:
        f = instance.field_inst
        lo, hi = self.driver.limits
        switches = self.driver.has_limit_switches
        at_hi = switches and self._dial >= hi - self.tolerance
        at_lo = switches and self._dial <= lo + self.tolerance
        user_hi, user_lo = (at_hi, at_lo) if self.cal.direction > 0 else (at_lo, at_hi)
        if int(user_hi) != f.user_high_limit_switch.value:
            await f.user_high_limit_switch.write(int(user_hi))
        if int(user_lo) != f.user_low_limit_switch.value:
            await f.user_low_limit_switch.write(int(user_lo))
        home = self.driver.home_switch
        at_home = home is not None and abs(self._dial - home) <= self.tolerance
        status = ((DIRECTION if self._direction > 0 else 0)
                  | (0 if moving or self._moving else DONE)
                  | (PLUS_LS if at_hi else 0) | (MINUS_LS if at_lo else 0)
                  | (HOMELS | HOME if at_home else 0) | (MOVING if moving else 0)
                  | (HOMED if self._homed else 0)
                  | (PROBLEM | COMM_ERR if self._fault else 0))
        if status != f.motor_status.value:
            await f.motor_status.write(status)
        if int(at_home) != f.at_home.value:
            await f.at_home.write(int(at_home))

    async def _publish_calibration(self, instance) -> None:
        """Show offset, direction and both pairs of limits; VAL's control limits are
        the user limits, so clients refuse an out-of-range target before sending it."""
        f = instance.field_inst
        lo, hi = self.cal.user_limits
        await f.user_offset.write(self.cal.offset, verify_value=False)
        await f.user_direction.write("Pos" if self.cal.direction > 0 else "Neg",
                                     verify_value=False)
        await f.dial_low_limit.write(self.cal.dial_low, verify_value=False)
        await f.dial_high_limit.write(self.cal.dial_high, verify_value=False)
        await f.user_low_limit.write(lo, verify_value=False)
        await f.user_high_limit.write(hi, verify_value=False)
        await instance.write_metadata(lower_ctrl_limit=lo, upper_ctrl_limit=hi,
                                      lower_disp_limit=lo, upper_disp_limit=hi)
        # as the motor record serves them: RBV within the user limits, DRBV and DVAL
        # within the dial limits (ophyd's EpicsMotor.describe() reads RBV's)
        dlo, dhi = self.cal.dial_low, self.cal.dial_high
        await f.user_readback_value.write_metadata(
            lower_ctrl_limit=lo, upper_ctrl_limit=hi, lower_disp_limit=lo, upper_disp_limit=hi)
        await f.dial_readback_value.write_metadata(
            lower_ctrl_limit=dlo, upper_ctrl_limit=dhi, lower_disp_limit=dlo,
            upper_disp_limit=dhi)
        await f.dial_desired_value.write_metadata(lower_disp_limit=dlo, upper_disp_limit=dhi)
        await f.user_readback_value.write(self.cal.user(self._dial), verify_value=False)

    async def _calibration_changed(self, instance) -> None:
        """Publish, keep VAL the user value of the dial target, and save."""
        await self._publish_calibration(instance)
        target = self.cal.user(instance.field_inst.dial_desired_value.value)
        await instance.write(target, verify_value=False)
        if self.autosave is not None:
            try:
                await self._worker.call(self.cal.save, self.autosave)
            except OSError as exc:
                log.error("%s: could not save the calibration to %s: %s",
                          instance.pvname, self.autosave, exc)

    # ------------------------------------------------------------------- moves
    async def _start_move(self, instance, user: float) -> None:
        """Check the limits, start the move (not waiting for it), show it started; after
        any halt in progress has ended (its DMOV belongs to the move it stopped)."""
        self._starts_waiting += 1
        waiting = True
        try:
            async with self._motion_lock:
                self._starts_waiting -= 1
                waiting = False
                await self._start_move_now(instance, user)
        finally:
            if waiting:  # cancelled before its turn
                self._starts_waiting -= 1

    async def _start_move_now(self, instance, user: float) -> None:
        f = instance.field_inst
        await self._check_limits(instance, user)
        dial = self.cal.clamp_dial(self.cal.dial(user))
        try:
            await self._worker.call(self.driver.move, dial)
        except (RuntimeError, ValueError) as exc:  # e.g. the scan board holds the axis
            await self._refuse(instance, f"move to {user:g} refused: {exc}")
        if self._refused:  # the last refusal's alarms end with a move that starts
            self._refused = False
            rbv = f.user_readback_value
            await rbv.write(rbv.value, status=AlarmStatus.NO_ALARM,
                            severity=AlarmSeverity.NO_ALARM, verify_value=False)
            await clear_write_alarm(instance)  # caproto's, on the refused put
        self._stopping = False  # a new target replaces the stop's
        self._direction = 1 if dial >= self._dial else -1
        await f.direction_of_travel.write(1 if self._direction * self.cal.direction > 0 else 0)
        self._moving = True
        self._done.clear()
        await f.dial_desired_value.write(dial, verify_value=False)
        await f.raw_desired_value.write(int(round(dial / self.resolution)),
                                        verify_value=False)
        await f.done_moving_to_value.write(0)
        await f.motor_is_moving.write(1)
        self._wake.set()

    async def _check_limits(self, instance, user: float) -> None:
        """Refuse a target outside the user limits (LVIO = 1, see :meth:`_refuse`); a
        target within them clears LVIO and the alarm."""
        f = instance.field_inst
        if self.cal.within_limits(user, self.tolerance / 10):
            if f.limit_violation.value:
                await f.limit_violation.write(0)
            return
        await f.limit_violation.write(1)
        lo, hi = self.cal.user_limits
        await self._refuse(instance, f"{user:g} is outside the limits [{lo:g}, {hi:g}] "
                                     "(LLM, HLM); not moved")

    async def _refuse(self, instance, why: str) -> None:
        """Refuse a move as a motor record does: an alarm on RBV and DMOV pulsed 0 -> 1,
        so a client waiting for the move (ophyd's EpicsMotor) ends now and sees it
        failed; the put itself fails with ``why``."""
        f = instance.field_inst
        if not self._moving:
            await f.done_moving_to_value.write(0)
            # the server sends a subscription only its newest value per batch: let the
            # 0 go out before the 1, or clients never see the pulse
            await asyncio.sleep(0.1)
        rbv = f.user_readback_value
        await rbv.write(rbv.value, status=AlarmStatus.SOFT, severity=AlarmSeverity.MINOR_ALARM,
                        verify_value=False)
        self._refused = True
        if not self._moving:
            await f.done_moving_to_value.write(1)
        raise ValueError(f"{instance.pvname}: {why}")

    async def _finished(self, instance) -> None:
        """The move is over: MSTA, MOVN, then DMOV say so; put completions end."""
        self._moving = False
        if self._jogging or self._homing:  # back to VELO after a jog or a homing run
            try:
                await self._speed(float(instance.field_inst.velocity.value))
            except Exception as exc:  # the move is over either way; say why VELO is off
                log.error("%s: could not return to VELO: %s", instance.pvname, exc)
        if self._jogging or self._stopping:  # VAL and DVAL are where it came to rest
            await self._came_to_rest(instance)
        self._jogging = self._stopping = False
        if self._homing:
            self._homing, self._homed = False, not self._fault
        await self._publish_status(instance, False)  # MSTA before DMOV: read then
        await instance.field_inst.motor_is_moving.write(0)
        await instance.field_inst.done_moving_to_value.write(1)
        self._done.set()

    async def _halt(self, instance, keep_target: bool = False) -> None:
        """Stop the axis; unless ``keep_target`` (SPMG Pause), VAL becomes where it
        stopped, as on any motor record."""
        async with self._motion_lock:
            await self._halt_now(instance, keep_target)

    async def _halt_now(self, instance, keep_target: bool) -> None:
        """Tell the axis to stop. The move ends (DMOV 1) when the poll loop sees the
        axis at rest, as on a motor record, whose DMOV follows the controller's done
        status: a real axis decelerates after the stop command, and a client that
        sends STOP and a new VAL at once (ophyd's EpicsMotor given a new target
        mid-move: its failed first move calls stop()) must not see the halt end as its
        new move's end (it did, in 4 of 25 tries, when the VAL came just after the halt
        had announced DMOV 1). Unless ``keep_target``, VAL becomes where the axis comes
        to rest: now when it was not moving, else when that move ends."""
        await self._worker.call(self.driver.stop)
        dial = await self._worker.call(self.driver.position)
        await self._publish_position(instance, dial)
        if keep_target:
            return
        if self._moving:
            self._stopping = True
        else:
            await self._came_to_rest(instance)

    @motor.putter
    async def motor(self, instance, value):
        value = float(value)
        f = instance.field_inst
        if _enum(f.set_use_switch) == "Set":
            if _enum(f.offset_freeze_switch) == "Frozen":
                raise ValueError(f"{instance.pvname}: the offset is frozen (FOFF); "
                                 "cannot recalibrate")
            # as the motor record: OFF = VAL - DVAL * DIR, DVAL kept (the readback of an
            # axis still settling would move DVAL by its settling error)
            dval = float(f.dial_desired_value.value)
            self.cal.offset = value - self.cal.direction * dval
            log.info("%s: recalibrated, %g now reads %g (offset %g); nothing moved",
                     instance.pvname, dval, value, self.cal.offset)
            await self._calibration_changed(instance)  # publish, VAL = user(DVAL), save
            return value
        mode = _enum(f.stop_pause_move_go)
        if mode in ("Stop", "Pause"):  # accepted; moves when SPMG goes to Move/Go
            await self._check_limits(instance, value)
            await f.dial_desired_value.write(self.cal.dial(value), verify_value=False)
            return value
        try:
            await self._start_move(instance, value)
        except (RuntimeError, ValueError) as exc:
            log.error("%s: move to %g refused: %s", instance.pvname, value, exc)
            raise
        await instance.write(value, verify_value=False)  # the target shows at once
        await self._done.wait()  # put completion ends with the move
        if mode == "Move":
            await f.stop_pause_move_go.write("Pause", verify_value=False)
        return instance.value

    @motor.fields.dial_desired_value.putter
    async def _dval(fields, instance, value):
        group = fields.parent.group
        if _enum(fields.set_use_switch) == "Set":
            raise ValueError("SET with DVAL would redefine the controller's own position, "
                             "which this axis does not support; write VAL to recalibrate")
        await group.motor.write(group.cal.user(float(value)))
        return fields.dial_desired_value.value

    @motor.fields.raw_desired_value.putter
    async def _rval(fields, instance, value):
        group = fields.parent.group
        await fields.dial_desired_value.write(int(value) * group.resolution)
        return fields.raw_desired_value.value

    # ------------------------------------------------------------- calibration
    @motor.fields.user_offset.putter
    async def _off(fields, instance, value):
        group = fields.parent.group
        if _enum(fields.offset_freeze_switch) == "Frozen":
            raise ValueError("the offset is frozen (FOFF = Frozen)")
        group.cal.offset = float(value)
        await group._calibration_changed(fields.parent)
        return float(value)

    @motor.fields.user_direction.putter
    async def _dir(fields, instance, value):
        group = fields.parent.group
        group.cal.direction = -1 if value in ("Neg", 1) else 1
        await group._calibration_changed(fields.parent)
        return value

    async def _set_limit(self, instance, dial: bool, high: bool, value: float) -> float:
        try:
            if dial:
                self.cal.set_dial_limit(high, float(value))
            else:
                self.cal.set_user_limit(high, float(value))
        except ValueError as exc:
            raise ValueError(f"{instance.pvname}: {exc}") from None
        await self._calibration_changed(instance)
        if dial:
            return self.cal.dial_high if high else self.cal.dial_low
        lo, hi = self.cal.user_limits
        return hi if high else lo

    @motor.fields.user_high_limit.putter
    async def _hlm(fields, instance, value):
        return await fields.parent.group._set_limit(fields.parent, False, True, value)

    @motor.fields.user_low_limit.putter
    async def _llm(fields, instance, value):
        return await fields.parent.group._set_limit(fields.parent, False, False, value)

    @motor.fields.dial_high_limit.putter
    async def _dhlm(fields, instance, value):
        return await fields.parent.group._set_limit(fields.parent, True, True, value)

    @motor.fields.dial_low_limit.putter
    async def _dllm(fields, instance, value):
        return await fields.parent.group._set_limit(fields.parent, True, False, value)

    # ------------------------------------------------------------ DISP / _able
    def _guard_disabled_puts(self, instance) -> None:
        """As EPICS does for a record whose DISP is 1: every client put to it or its
        fields (DISP itself excepted) is refused, with the reason. Only client puts
        are guarded (``write_from_dbr``): the record's own updates go on."""
        disp = instance.field_inst.disable_putfield

        def guard(data):
            original = data.write_from_dbr

            async def write_from_dbr(*args, **kwargs):
                if disp.value:
                    raise ValueError(f"{data.pvname}: puts are disabled (DISP = 1; put "
                                     f"Enable to {instance.pvname}_able to allow them)")
                return await original(*args, **kwargs)

            data.write_from_dbr = write_from_dbr

        guard(instance)
        for name, data in (instance.fields or {}).items():
            if name != "DISP":
                guard(data)

    @able.putter
    async def able(self, instance, value):
        disabled = value in ("Disable", 1)
        await self.motor.field_inst.disable_putfield.write(int(disabled))
        return value

    # ------------------------------------------------------- stop, tweak, jog, home
    @motor.fields.stop.putter
    async def _stop(fields, instance, value):
        if value:
            await fields.parent.group._halt(fields.parent)
        return 0

    @motor.fields.stop_pause_move_go.putter
    async def _spmg(fields, instance, value):
        group, record = fields.parent.group, fields.parent
        mode = value if isinstance(value, str) else fields.stop_pause_move_go.enum_strings[value]
        if mode in ("Stop", "Pause"):
            await group._halt(record, keep_target=mode == "Pause")
        elif abs(record.value - group.cal.user(group._dial)) > group.tolerance:
            await group._start_move(record, record.value)  # resume towards VAL
        return value

    async def _tweak(self, instance, sign: int) -> None:
        step = float(instance.field_inst.tweak_step_size.value)
        await self.motor.write(instance.value + sign * step)

    @motor.fields.tweak_motor_forward.putter
    async def _twf(fields, instance, value):
        if value:
            await fields.parent.group._tweak(fields.parent, +1)
        return 0

    @motor.fields.tweak_motor_reverse.putter
    async def _twr(fields, instance, value):
        if value:
            await fields.parent.group._tweak(fields.parent, -1)
        return 0

    async def _came_to_rest(self, instance) -> None:
        """A jog or a STOP ended: as the motor record, VAL and DVAL become where the
        axis is (a tweak after it starts from there), and LVIO says when a soft limit
        stopped a jog."""
        f = instance.field_inst
        await f.dial_desired_value.write(self._dial, verify_value=False)
        await instance.write(self.cal.user(self._dial), verify_value=False)
        if not self.cal.within_limits(self.cal.user(self._dial), -self.tolerance):
            await f.limit_violation.write(1)

    async def _jog(self, instance, forward: bool, on: bool) -> None:
        if not on:
            if self._jogging:
                await self._halt(instance)
            return
        lo, hi = self.cal.user_limits
        await self._speed(float(instance.field_inst.jog_velocity.value))
        await self._start_move(instance, hi if forward else lo)
        self._jogging = True

    @motor.fields.jog_motor_forward.putter
    async def _jogf(fields, instance, value):
        await fields.parent.group._jog(fields.parent, True, bool(value))
        return value

    @motor.fields.jog_motor_reverse.putter
    async def _jogr(fields, instance, value):
        await fields.parent.group._jog(fields.parent, False, bool(value))
        return value

    async def _home(self, instance) -> None:
        if self.driver.home_switch is None:
            raise ValueError(f"{instance.pvname} cannot home: this axis has no home switch")
        await self._speed(float(instance.field_inst.home_velocity.value))
        await self._start_move(instance, self.cal.user(self.driver.home_switch))
        self._homing = True
        await self._done.wait()
        await instance.write(self.cal.user(self._dial), verify_value=False)

    # ------------------------------------------------------------------ speed
    async def _speed(self, velocity: float) -> None:
        """Drive at ``velocity`` from now on (no-op when it already does, or when the
        axis's speed cannot change: then VELO/JVEL/HVEL only take its one speed)."""
        if self.driver.max_velocity and velocity != self.driver.velocity:
            await self._worker.call(self.driver.set_velocity, velocity)

    def _check_speed(self, name: str, velocity: float) -> None:
        if velocity == self.driver.velocity:
            return
        if not self.driver.max_velocity:
            if not self.driver.velocity:  # a piezo: each position is reached as it settles
                raise ValueError(f"{self.prefix}.{name}: this axis has no speed to set; it "
                                 "goes to each position in one step and settles there")
            raise ValueError(f"{self.prefix}.{name}: this axis's speed is fixed at "
                             f"{self.driver.velocity:g} {self.driver.units}/s")
        if not 0 < velocity <= self.driver.max_velocity:
            raise ValueError(f"{self.prefix}.{name} = {velocity:g} outside (0, "
                             f"{self.driver.max_velocity:g}] {self.driver.units}/s (VMAX)")

    @motor.fields.motor_step_size.putter
    async def _mres(fields, instance, value):
        """MRES is the driver's step (its precision); a put that would change it is
        refused, not taken and then ignored (RBV and RRBV would disagree)."""
        group = fields.parent.group
        if float(value) != group.resolution:
            raise ValueError(f"{group.prefix}.MRES is {group.resolution:g} "
                             f"{group.driver.units} per step, set by the axis's driver; "
                             "it cannot be changed")
        return value

    @motor.fields.velocity.putter
    async def _velo(fields, instance, value):
        group = fields.parent.group
        group._check_speed("VELO", float(value))
        if not (group._jogging or group._homing):
            await group._speed(float(value))
        return value

    @motor.fields.jog_velocity.putter
    async def _jvel(fields, instance, value):
        fields.parent.group._check_speed("JVEL", float(value))
        return value

    @motor.fields.home_velocity.putter
    async def _hvel(fields, instance, value):
        fields.parent.group._check_speed("HVEL", float(value))
        return value

    @motor.fields.max_velocity.putter
    async def _vmax(fields, instance, value):
        if float(value) != fields.parent.group.driver.max_velocity:
            raise ValueError("VMAX is the axis's fastest speed, set by its configuration")
        return value

    @motor.fields.seconds_to_velocity.putter
    async def _accl(fields, instance, value):
        if float(value) != float(fields.seconds_to_velocity.value):
            raise ValueError("ACCL: the acceleration of this axis is not adjustable")
        return value

    @motor.fields.base_velocity.putter
    async def _vbas(fields, instance, value):
        if float(value) != float(fields.base_velocity.value):
            raise ValueError("VBAS: this axis has no base speed to set")
        return value

    @motor.fields.home_forward.putter
    async def _homf(fields, instance, value):
        if value:
            await fields.parent.group._home(fields.parent)
        return 0

    @motor.fields.home_reverse.putter
    async def _homr(fields, instance, value):
        if value:
            await fields.parent.group._home(fields.parent)
        return 0
