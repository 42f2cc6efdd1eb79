-- Planner statistics (SPEC §17): see sql/views/11_planner_statistics.sql.

-- name: refresh_stale_planner_statistics
-- The claim's tables that outgrew their statistics, analysed now (the names come back).
select refresh_stale_planner_statistics() as analysed
