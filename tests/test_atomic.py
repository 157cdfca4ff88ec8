"""colorray.atomic: a reader never sees half a file, and the temp file is never a planted link."""
import threading

from colorray.atomic import write_bytes_atomic, write_json_atomic


def test_a_planted_link_at_the_old_fixed_temp_name_is_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / ".result.json.tmp").symlink_to(outside)  # the fixed name earlier versions wrote through
    write_json_atomic(folder / "result.json", {"ok": 1})
    assert outside.read_text() == "keep me"
    assert (folder / "result.json").read_text().strip().endswith("}")


def test_concurrent_writers_of_one_file_leave_one_whole_version_and_no_temp_files(tmp_path):
    path = tmp_path / "shared.bin"
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    errors = []

    def write(p):
        try:
            for _ in range(5):
                write_bytes_atomic(path, p)
        except Exception as e:  # a clash on a shared temp name raised FileNotFoundError before
            errors.append(e)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert path.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]
