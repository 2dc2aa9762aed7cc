"""Node helpers: image conversion, JSON payloads, parameter checks, the test harness itself."""
import numpy as np
import pytest
import rclpy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from sim2real_vla_ros.nodes import common
from ros_harness import param_arg


def test_image_round_trip_and_channel_swap():
    rgb = np.random.default_rng(0).integers(0, 255, (6, 7, 3), dtype=np.uint8)
    msg = common.numpy_to_image(rgb, "rgb8", frame_id="cam")
    assert (msg.height, msg.width, msg.step) == (6, 7, 21)
    assert np.array_equal(common.image_to_numpy(msg), rgb)
    assert np.array_equal(common.image_to_numpy(msg, "bgr8"), rgb[..., ::-1])
    mono = rgb[..., 0]
    assert np.array_equal(common.image_to_numpy(common.numpy_to_image(mono, "mono8"), "mono8"), mono)


def test_image_with_row_padding():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = Image(height=2, width=3, encoding="rgb8", step=12)
    msg.data = b"".join(row.tobytes() + b"\0\0\0" for row in rgb)
    assert np.array_equal(common.image_to_numpy(msg), rgb)


@pytest.mark.parametrize("field,value,match", [
    ("encoding", "yuv422", "unsupported"),
    ("height", 0, "empty"),
    ("step", 2, "step"),
    ("data", b"\0" * 5, "bytes"),
])
def test_malformed_images_raise_one_clear_error(field, value, match):
    msg = common.numpy_to_image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    setattr(msg, field, value)
    with pytest.raises(common.ImageMessageError, match=match):
        common.image_to_numpy(msg)


def test_json_payloads():
    msg = common.json_message({"a": np.float32(1.5), "b": np.arange(2)})
    assert common.parse_json_message(msg, required=("a",)) == {"a": 1.5, "b": [0, 1]}
    with pytest.raises(ValueError, match="not JSON"):
        common.parse_json_message(String(data="{oops"))
    with pytest.raises(ValueError, match="lacks"):
        common.parse_json_message(String(data="{}"), required=("a",))


def test_stamp_conversion():
    stamp = common.seconds_to_stamp(12.25)
    assert (stamp.sec, stamp.nanosec) == (12, 250_000_000)
    assert common.stamp_to_seconds(stamp) == pytest.approx(12.25)
    # Regression: rounding only the fraction once turned 2.9999999999 s into 2.0 s (a jump back).
    carried = common.seconds_to_stamp(2.9999999999)
    assert (carried.sec, carried.nanosec) == (3, 0)


def test_param_arg_syntax():
    assert param_arg("a", True) == "a:=true"
    assert param_arg("b", "10") == 'b:="10"'
    assert param_arg("c", [1.0, 2.0]) == "c:=[1.0, 2.0]"


def test_declare_rejects_out_of_range_value():
    with rclpy.init():
        node = rclpy.node.Node("declare_test", parameter_overrides=[
            rclpy.parameter.Parameter("rate", rclpy.parameter.Parameter.Type.DOUBLE, -1.0)])
        with pytest.raises(ValueError, match="'rate' = -1.0: must be > 0"):
            common.declare(node, "rate", 2.0, "rate in Hz", lambda v: v > 0, "> 0")
        node.destroy_node()


def test_declare_accepts_an_integer_for_a_float_parameter():
    with rclpy.init():
        node = rclpy.node.Node("declare_int_test", parameter_overrides=[
            rclpy.parameter.Parameter("rate", rclpy.parameter.Parameter.Type.INTEGER, 2),
            rclpy.parameter.Parameter("gain", rclpy.parameter.Parameter.Type.STRING, "high")])
        value = common.declare(node, "rate", 1.0, "rate in Hz", lambda v: v > 0, "> 0")
        assert value == 2.0 and isinstance(value, float)
        with pytest.raises(ValueError, match="'gain' = 'high': must be a number"):
            common.declare(node, "gain", 1.0, "a gain")
        node.destroy_node()


# --- parameters as data --------------------------------------------------------------
RATE = common.Param("rate", 2.0, "rate in Hz", lambda v: 0.0 < v <= 10.0, "in (0, 10]")
GAIN = common.Param("gain", 0.5, "a live gain", lambda v: 0.0 <= v <= 1.0, "in [0, 1]", read_only=False)
HOOK = common.Param("scripted", "model", "a test hook", lambda v: v in ("model", "1.0"), "'model' or '1.0'",
                    test_hook=True)


def _node(name, **overrides):
    types = {bool: rclpy.parameter.Parameter.Type.BOOL, float: rclpy.parameter.Parameter.Type.DOUBLE,
             int: rclpy.parameter.Parameter.Type.INTEGER, str: rclpy.parameter.Parameter.Type.STRING}
    return rclpy.node.Node(name, parameter_overrides=[rclpy.parameter.Parameter(key, types[type(value)], value)
                                                      for key, value in overrides.items()])


def test_declare_parameters_returns_checked_values_with_descriptors():
    with rclpy.init():
        node = _node("declare_parameters_test", rate=4)
        values = common.declare_parameters(node, (RATE, GAIN, HOOK))
        assert values == {"rate": 4.0, "gain": 0.5, "scripted": "model"} and isinstance(values["rate"], float)
        rate, gain, hook = node.describe_parameters(["rate", "gain", "scripted"])
        assert rate.read_only and rate.description == "rate in Hz" and rate.additional_constraints == "in (0, 10]"
        assert not gain.read_only
        assert hook.read_only and "use_sim_time" in hook.description
        node.destroy_node()


def test_declare_parameters_rejects_out_of_range_value_with_one_line():
    with rclpy.init():
        node = _node("declare_parameters_range_test", rate=11.0)
        with pytest.raises(ValueError, match=r"^parameter 'rate' = 11.0: must be in \(0, 10\]$"):
            common.declare_parameters(node, (RATE,))
        node.destroy_node()


def test_a_test_hook_is_refused_without_use_sim_time():
    with rclpy.init():
        engaged = _node("hook_without_sim_time", scripted="1.0")
        with pytest.raises(ValueError, match="parameter 'scripted' = '1.0': a test / dry-run hook, refused unless "
                                             "use_sim_time is true"):
            common.declare_parameters(engaged, (HOOK,))
        engaged.destroy_node()
        off = _node("hook_at_default")  # left at its default the hook is off: fine on a robot
        assert common.declare_parameters(off, (HOOK,)) == {"scripted": "model"}
        off.destroy_node()
        simulated = _node("hook_with_sim_time", scripted="1.0", use_sim_time=True)
        assert common.declare_parameters(simulated, (HOOK,)) == {"scripted": "1.0"}
        simulated.destroy_node()


def test_a_run_time_set_is_refused_for_read_only_and_bad_values_and_applied_for_live_ones():
    applied = []
    with rclpy.init():
        node = _node("live_parameters_test")
        common.declare_parameters(node, (RATE, GAIN))
        common.on_set_parameters(node, (RATE, GAIN), applied.append)
        Parameter = rclpy.parameter.Parameter
        refused, = node.set_parameters([Parameter("rate", Parameter.Type.DOUBLE, 5.0)])
        assert not refused.successful and "read-only" in refused.reason and "rate" in refused.reason
        assert node.get_parameter("rate").value == 2.0
        bad, = node.set_parameters([Parameter("gain", Parameter.Type.DOUBLE, 1.5)])
        assert not bad.successful and bad.reason == "parameter 'gain' = 1.5: must be in [0, 1]"
        assert node.get_parameter("gain").value == 0.5 and applied == []
        good, = node.set_parameters([Parameter("gain", Parameter.Type.INTEGER, 1)])
        assert good.successful and applied == [{"gain": 1.0}] and isinstance(applied[0]["gain"], float)
        # Parameters the helper does not own are left to their own callbacks.
        assert node.set_parameters([Parameter("use_sim_time", Parameter.Type.BOOL, False)])[0].successful
        node.destroy_node()


def test_on_set_parameters_refuses_a_read_only_param_even_without_the_descriptor_flag():
    with rclpy.init():
        node = _node("read_only_without_flag_test")
        common.declare(node, "legacy", 1.0, "declared elsewhere")
        node.declare_parameter("loose", 1.0)  # no read_only descriptor: only the helper refuses
        common.on_set_parameters(node, (common.Param("loose", 1.0, "a read-only one"),), lambda values: None)
        result, = node.set_parameters([rclpy.parameter.Parameter("loose", rclpy.parameter.Parameter.Type.DOUBLE,
                                                                 2.0)])
        assert not result.successful and result.reason == common.read_only_reason("loose")
        # common.declare keeps its former descriptor: the caller's own callback decides on sets.
        assert not node.describe_parameter("legacy").read_only
        node.destroy_node()
