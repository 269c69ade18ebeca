-- Test job_submit.lua: logs what tres_per_node looks like, and appends shard units
-- for each mig:<profile>:<n> (1g.10gb=1, 2g.20gb=2, 3g.40gb=4, 4g.40gb=4, 7g.80gb=8),
-- using the same prefix style ("gres/" or "gres:") Slurm handed us.
local units = { ["1g.10gb"] = 1, ["1g.20gb"] = 2, ["2g.20gb"] = 2, ["3g.40gb"] = 4,
                ["4g.40gb"] = 4, ["7g.80gb"] = 8 }

local function dump(where, jd)
    slurm.log_info("JOBSUBMIT-DUMP %s tres_per_node=[%s] tres_per_job=[%s] tres_per_task=[%s] tres_per_socket=[%s] name=[%s]",
        where, tostring(jd.tres_per_node), tostring(jd.tres_per_job), tostring(jd.tres_per_task),
        tostring(jd.tres_per_socket), tostring(jd.name))
end

local function translate(tres)
    local total, found, prefix = 0, false, "gres/"
    for item in string.gmatch(tres, "[^,]+") do
        local p, name, count = item:match("^(gres[:/])mig:([^:]+):(%d+)$")
        if not p then p, name = item:match("^(gres[:/])mig:([^:]+)$"); count = "1" end
        if p then
            prefix = p
            found = true
            total = total + (units[name] or 0) * tonumber(count)
        end
    end
    if not found then return nil end
    return tres .. "," .. prefix .. "shard:" .. total
end

function slurm_job_submit(job_desc, part_list, submit_uid)
    dump("submit-before", job_desc)
    if job_desc.tres_per_node ~= nil then
        local new = translate(job_desc.tres_per_node)
        if new then job_desc.tres_per_node = new end
    end
    dump("submit-after", job_desc)
    return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
    dump("modify", job_desc)
    return slurm.SUCCESS
end

slurm.log_info("JOBSUBMIT-DUMP loaded")
return slurm.SUCCESS
