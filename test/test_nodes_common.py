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
