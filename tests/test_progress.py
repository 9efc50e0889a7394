"""progress: a worker's bars relayed to the parent's display (compare --jobs)."""

import queue

from imgclf import progress


def test_a_relayed_bar_reports_its_state_and_the_parent_draws_it(monkeypatch):
    q = queue.Queue()
    monkeypatch.setattr(progress, "_RELAY", {})
    progress.relay_to(q)
    progress.relay_to(name="adam")  # the queue stays: a worker's next run
    with progress.make_progress("img", "loss {task.fields[loss]}") as bar:
        assert bar.disable  # a worker draws nothing itself
        t = bar.add_task("adam 1/3", total=100, loss="-")
        for _ in range(100):
            bar.advance(t, 1)
        bar.update(t, loss="0.5")
    sent = []
    while not q.empty():
        sent.append(q.get())
    assert len(sent) < 100  # throttled: not one message per step
    assert sent[-1] == ("adam", "adam 1/3", 100, 100, {"loss": "0.5"})  # the final state always goes

    monkeypatch.setattr(progress, "_RELAY", {})  # the parent draws
    drawn = {}
    real_reset = progress.Progress.reset

    def reset(self, task_id, **kw):
        drawn[kw["description"]] = kw["completed"]
        return real_reset(self, task_id, **kw)

    monkeypatch.setattr(progress.Progress, "reset", reset)
    for m in sent + [("sgd", "features train", 5, 10, {})]:
        q.put(m)
    progress.relayed_bars(q, ["adam", "sgd"], running=lambda: False)
    assert q.empty() and drawn == {"adam 1/3": sent[0][2], "sgd: features train": 5}
