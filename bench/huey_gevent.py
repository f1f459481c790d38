"""huey_consumer with gevent's monkey-patch applied first: the bench's entry point for
huey's greenlet worker (`-k greenlet`), the async rows' comparison.

    python bench/huey_gevent.py benchtasks.huey -k greenlet -w 100 -q

huey 3.5.4's consumer does not patch by itself: with -k greenlet it only warns ("Gevent
monkey-patch has not been applied, this may result in incorrect or unpredictable
behavior") when socket is not patched (huey/consumer.py, GreenletEnvironment). huey's
documentation asks for the patch to be applied before anything else is imported, as its
own example (examples/simple/main.py) does. So this module patches, then imports and runs
huey's consumer_main() with the same arguments as `huey_consumer`. Patched time.sleep
makes a task's time.sleep() yield to the other greenlets.
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from huey.bin.huey_consumer import consumer_main  # noqa: E402

if __name__ == "__main__":
    sys.argv[0] = "huey_consumer"
    consumer_main()
