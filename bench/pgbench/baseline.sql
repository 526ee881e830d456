\set n random(1, 20000)
SELECT p.v FROM bench_ids b JOIN bench_pk p ON p.id = b.id WHERE b.n = :n;
