-- The legacy table predates this project and holds production rows: going down never drops
-- it. (Reverting 0002 is what removes our columns.)
SELECT 1;
