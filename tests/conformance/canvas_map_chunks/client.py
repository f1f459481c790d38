"""map, starmap and chunks, called and applied."""
from tasks import add, tsum


def observe(seen):
    seen("map called here", lambda: tsum.map([list(range(10)), list(range(100))])())
    seen("starmap called here", lambda: add.starmap(zip(range(10), range(10)))())
    seen("map delay", lambda: tsum.map([list(range(10)), list(range(100))]).delay().get(
        timeout=10))
    seen("starmap apply_async",
         lambda: add.starmap([(i, i) for i in range(5)]).apply_async().get(timeout=10))
    seen("chunks", lambda: add.chunks([(i, i) for i in range(20)], 10)().get(timeout=10))
    seen("chunks as a group",
         lambda: add.chunks([(i, i) for i in range(6)], 2).group().apply_async().get(timeout=10))
    seen("repr of map", lambda: repr(tsum.map([[1, 2]])))
