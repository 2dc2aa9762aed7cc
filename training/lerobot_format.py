"""Write and read demonstrations in LeRobot's dataset v3.0 on-disk layout (pyarrow + OpenCV only).

LeRobot (``LeRobotDataset``) is the reference format robot-learning users load. The ``lerobot``
package itself does not install here: its versions that write v3.0 for Python 3.11 (0.4.x)
pull torch with the CUDA libraries, and 0.5+ need Python 3.12 (this machine has 3.11). So this
module writes the same layout with the libraries the project has:

    meta/info.json                      codebase_version v3.0, fps, features, path templates
    meta/stats.json                     per-feature min / max / mean / std / count
    meta/tasks.parquet                  task text -> task_index (pandas index column ``__index_level_0__``)
    meta/episodes/chunk-000/file-000.parquet
                                        per episode: length, tasks, data and video offsets, and
                                        this project's extras (seed, success, sub-goal names,
                                        domain-randomisation record as JSON)
    data/chunk-000/file-000.parquet     every frame: the numeric features + timestamp,
                                        frame_index, episode_index, index, task_index
    videos/<camera key>/chunk-000/file-000.mp4
                                        each camera's frames, episodes concatenated

Images are videos (``dtype: video``, MPEG-4 part 2 through OpenCV: lossy, as LeRobot's own AV1
is); masks are class ids and must stay exact, so they are ``uint8`` arrays in the parquet table.
One data file and one video file per camera (the datasets here stay far below LeRobot's 100 /
200 MB sharding sizes; :func:`write_dataset` refuses to write more than that into one file).
:func:`read_dataset` reads it back (the round-trip test), frame for frame.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
TASKS_PATH = "meta/tasks.parquet"
CHUNKS_SIZE = 1000
DATA_FILE_SIZE_MB = 100
VIDEO_FILE_SIZE_MB = 200
VIDEO_CODEC = ("mp4v", "mpeg4")  # (OpenCV fourcc, the codec name info.json gives)
INDEX_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                  "task_index": "int64"}
_DTYPES = {np.dtype("float32"): "float32", np.dtype("float64"): "float64", np.dtype("int64"): "int64",
           np.dtype("uint8"): "uint8", np.dtype("bool"): "bool"}


def _video_keys(frames: Dict[str, np.ndarray]) -> List[str]:
    return [key for key, value in frames.items() if key.startswith("observation.images.") and value.ndim == 4]


def features_of(frames: Dict[str, np.ndarray], fps: float) -> dict:
    """info.json ``features`` of one episode's frame arrays."""
    features = {}
    for key, value in frames.items():
        if key in _video_keys(frames):
            height, width = value.shape[1:3]
            features[key] = {"dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"],
                             "info": {"video.height": height, "video.width": width, "video.codec": VIDEO_CODEC[1],
                                      "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                                      "video.channels": 3, "has_audio": False}}
        else:
            features[key] = {"dtype": _DTYPES[value.dtype], "shape": list(value.shape[1:]) or [1], "names": None}
    for key, dtype in INDEX_FEATURES.items():
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def _column(values: np.ndarray) -> pa.Array:
    """A feature column: scalars as they are, an array of shape [n, a, b, ...] as fixed-size lists
    nested per dimension (what HF datasets' Sequence / Array2D / Array3D features, which
    LeRobotDataset builds from info.json's shapes, read)."""
    column = pa.array(values.reshape(-1))
    for size in reversed(values.shape[1:]):
        column = pa.FixedSizeListArray.from_arrays(column, size)
    return column


def _stats(key: str, values: np.ndarray, is_video: bool) -> dict:
    if is_video:  # per channel, in [0, 1], shaped [3, 1, 1] as LeRobot's image stats are
        pixels = values.reshape(-1, 3).astype(np.float64) / 255.0
        shape = lambda v: [[[float(c)]] for c in v]  # noqa: E731
        return {"min": shape(pixels.min(0)), "max": shape(pixels.max(0)), "mean": shape(pixels.mean(0)),
                "std": shape(pixels.std(0)), "count": [int(len(values))]}
    numbers = values.reshape(len(values), -1).astype(np.float64)
    return {"min": numbers.min(0).tolist(), "max": numbers.max(0).tolist(), "mean": numbers.mean(0).tolist(),
            "std": numbers.std(0).tolist(), "count": [int(len(values))]}


def write_dataset(folder: str, episodes: Sequence, fps: float, robot_type: str = "") -> dict:
    """Write ``episodes`` (objects with ``task``, ``instruction``, ``seed``, ``success``, ``frames``,
    ``subgoals``, ``randomization``, ``failed_subgoal``: :class:`training.demonstrations.DemoEpisode`)
    in the v3.0 layout; returns info.json's content."""
    if not episodes:
        raise ValueError("no episodes to write")
    frames0 = episodes[0].frames
    video_keys = _video_keys(frames0)
    features = features_of(frames0, fps)
    tasks = sorted({episode.instruction for episode in episodes})  # LeRobot's "task": the language instruction
    task_index = {text: i for i, text in enumerate(tasks)}
    columns: Dict[str, List[np.ndarray]] = {key: [] for key in features if key not in video_keys}
    writers = {}
    episode_rows = []
    index = 0
    for number, episode in enumerate(episodes):
        frames, length = episode.frames, len(episode.frames["observation.state"])
        if set(frames) != set(frames0):
            raise ValueError(f"episode {number}: features {sorted(frames)} differ from the first episode's")
        text = episode.instruction
        for key in frames:
            if key not in video_keys:
                columns[key].append(np.asarray(frames[key]))
        columns["timestamp"].append((np.arange(length) / fps).astype(np.float32))
        columns["frame_index"].append(np.arange(length, dtype=np.int64))
        columns["episode_index"].append(np.full(length, number, np.int64))
        columns["index"].append(np.arange(index, index + length, dtype=np.int64))
        columns["task_index"].append(np.full(length, task_index[text], np.int64))
        row = {"episode_index": number, "tasks": [text], "length": length, "data/chunk_index": 0,
               "data/file_index": 0, "dataset_from_index": index, "dataset_to_index": index + length,
               "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
               "task_name": episode.task, "seed": int(episode.seed), "success": bool(episode.success),
               "failed_subgoal": episode.failed_subgoal or "", "subgoals": list(episode.subgoals),
               "randomization": json.dumps(episode.randomization, default=_plain)}
        start_s = index / fps
        for key in video_keys:
            writer = writers.get(key)
            if writer is None:
                path = os.path.join(folder, VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                height, width = frames[key].shape[1:3]
                writer = writers[key] = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*VIDEO_CODEC[0]), fps,
                                                        (width, height))
            for image in frames[key]:
                writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            row.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                        f"videos/{key}/from_timestamp": start_s, f"videos/{key}/to_timestamp": (index + length) / fps})
        episode_rows.append(row)
        index += length
    for writer in writers.values():
        writer.release()
    merged = {key: np.concatenate(parts) for key, parts in columns.items()}
    table = pa.table({key: _column(values) for key, values in merged.items()})
    data_path = os.path.join(folder, DATA_PATH.format(chunk_index=0, file_index=0))
    os.makedirs(os.path.dirname(data_path), exist_ok=True)
    pq.write_table(table, data_path, compression="zstd")
    if os.path.getsize(data_path) > DATA_FILE_SIZE_MB * 2**20:
        raise ValueError(f"{data_path}: over {DATA_FILE_SIZE_MB} MB; write fewer episodes per dataset")
    episodes_path = os.path.join(folder, EPISODES_PATH.format(chunk_index=0, file_index=0))
    os.makedirs(os.path.dirname(episodes_path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episode_rows), episodes_path)
    # pandas reads __index_level_0__ + this metadata as the DataFrame's index (LeRobot's tasks table).
    tasks_table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "__index_level_0__": tasks})
    pandas_meta = {"index_columns": ["__index_level_0__"], "column_indexes": [], "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
         "metadata": None},
        {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object",
         "metadata": None}], "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    tasks_table = tasks_table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    pq.write_table(tasks_table, os.path.join(folder, TASKS_PATH))
    stats = {key: _stats(key, merged[key], False) for key in merged if features[key]["dtype"] != "bool"}
    for key in video_keys:
        stats[key] = _stats(key, np.concatenate([np.asarray(e.frames[key]) for e in episodes]), True)
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type or None,
            "total_episodes": len(episodes), "total_frames": index, "total_tasks": len(tasks),
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_SIZE_MB,
            "video_files_size_in_mb": VIDEO_FILE_SIZE_MB, "fps": int(round(fps)),
            "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if video_keys else None, "features": features}
    for name, payload in (("info.json", info), ("stats.json", stats)):
        with open(os.path.join(folder, "meta", name), "w", encoding="utf-8") as stream:
            json.dump(payload, stream, indent=2)
    return info


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def read_dataset(folder: str) -> List[dict]:
    """Every episode back: {'meta': its episodes-table row, 'frames': {feature: array}}."""
    with open(os.path.join(folder, "meta", "info.json"), encoding="utf-8") as stream:
        info = json.load(stream)
    features = info["features"]
    table = pq.read_table(os.path.join(folder, info["data_path"].format(chunk_index=0, file_index=0)))
    rows = pq.read_table(os.path.join(folder, EPISODES_PATH.format(chunk_index=0, file_index=0))).to_pylist()
    data = {}
    for key in table.column_names:
        column = table.column(key).combine_chunks()
        shape = features[key]["shape"]
        if pa.types.is_fixed_size_list(column.type):
            flat = column
            while pa.types.is_fixed_size_list(flat.type):
                flat = flat.flatten()
            data[key] = flat.to_numpy(zero_copy_only=False).reshape(len(column), *shape)
        else:
            data[key] = column.to_numpy(zero_copy_only=False)
    videos = {key: _read_video(os.path.join(folder, info["video_path"].format(video_key=key, chunk_index=0,
                                                                               file_index=0)))
              for key, spec in features.items() if spec["dtype"] == "video"}
    episodes = []
    for row in rows:
        span = slice(row["dataset_from_index"], row["dataset_to_index"])
        frames = {key: values[span] for key, values in data.items()}
        frames.update({key: video[span] for key, video in videos.items()})
        episodes.append({"meta": row, "frames": frames})
    return episodes


def _read_video(path: str) -> np.ndarray:
    capture = cv2.VideoCapture(path)
    images = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        images.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.asarray(images)
