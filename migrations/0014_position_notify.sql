-- depends: 0010_ws_tickets
-- Read-your-writes across processes without polling: every move of the active version's
-- tracking position is announced on the channel liudong_positions, payload
-- "<projection> <source> <position>" (sent at the page's commit, as NOTIFY always is).
-- A process that does not run a projection (another API worker or node) LISTENs and wakes
-- its waiters (projections.board.PositionListener) instead of reading projection_tracking
-- every 50 ms. A version being rebuilt is not active: its pages announce nothing.

CREATE FUNCTION liudong_announce_position() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    name text;
BEGIN
    IF NEW.position IS DISTINCT FROM OLD.position THEN
        SELECT projection INTO name FROM projection_versions
        WHERE schema_name = NEW.schema_name AND active;
        IF name IS NOT NULL THEN
            PERFORM pg_notify('liudong_positions', name || ' ' || NEW.source || ' ' || NEW.position);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER projection_tracking_announce
    AFTER UPDATE OF position ON projection_tracking
    FOR EACH ROW EXECUTE FUNCTION liudong_announce_position();
